//! Executions: one run of a pipeline, its state machines, and the planning functions.
//!
//! The planning functions are the whole of the engine's decision making. Each takes the
//! current state and what happened, and returns a [`Plan`]: the execution's next state, the
//! jobs to enqueue and the events to append. The store commits a plan atomically, guarded by
//! the execution's revision and the job's lease token; if the revision moved, the caller
//! re-reads and plans again. Plans are pure: the same inputs give the same plan.
//!
//! Execution status:
//!
//! ```text
//!  start ──▶ running ──(last step succeeded)──▶ completed
//!             │  ▲ ╲──(step failed / job cancelled)──▶ failed ──retry──▶ running
//!        park │  │ unpark                 cancel ──▶ cancelled ──retry──▶ running
//!             ▼  │
//!           blocked        running/blocked ──pause──▶ paused ──resume──▶ running
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{Event, names};
use crate::job::{Job, JobError, NewJob, Settlement};
use crate::pipeline::{Pipeline, StepDef, StepKind};
use crate::{IllegalTransition, Millis};

/// Most failures kept in `failure_history`.
pub const MAX_FAILURE_HISTORY: usize = 20;

/// Status of an execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// A step is queued, running or waiting. Occupies the target's live slot.
    Running,
    /// Parked on a human. Occupies the target's live slot.
    Blocked,
    /// Paused by an operator at a step boundary. Occupies the target's live slot.
    Paused,
    /// Terminal: the last step succeeded.
    Completed,
    /// Terminal until retried: see the failure record.
    Failed,
    /// Terminal until retried: cancelled by an operator.
    Cancelled,
}

impl ExecutionStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Blocked => "blocked",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the execution holds its target's live slot.
    pub fn is_live(self) -> bool {
        matches!(self, ExecutionStatus::Running | ExecutionStatus::Blocked | ExecutionStatus::Paused)
    }

    /// Every status, for table tests.
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Running,
        ExecutionStatus::Blocked,
        ExecutionStatus::Paused,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
    ];
}

/// Events that move an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// A step that is not the last settled successfully.
    StepAdvanced,
    /// The last step settled successfully.
    Finish,
    /// A step failed for good, a step job was cancelled, or an approval was rejected.
    Fail,
    /// The current step waits for a human.
    Park,
    /// The human decided; the execution goes on.
    Unpark,
    /// An operator pauses it.
    Pause,
    /// An operator resumes it.
    Resume,
    /// An operator cancels it.
    Cancel,
    /// An operator retries it from the first step that did not succeed.
    Retry,
    /// An operator restarts it from a chosen step.
    Restart,
}

impl ExecutionEvent {
    /// Every event, for table tests.
    pub const ALL: [ExecutionEvent; 10] = [
        ExecutionEvent::StepAdvanced,
        ExecutionEvent::Finish,
        ExecutionEvent::Fail,
        ExecutionEvent::Park,
        ExecutionEvent::Unpark,
        ExecutionEvent::Pause,
        ExecutionEvent::Resume,
        ExecutionEvent::Cancel,
        ExecutionEvent::Retry,
        ExecutionEvent::Restart,
    ];
}

/// The execution state machine.
///
/// # Errors
/// [`IllegalTransition`] when `event` is not allowed in `from`.
pub fn transition(
    from: ExecutionStatus,
    event: ExecutionEvent,
) -> Result<ExecutionStatus, IllegalTransition> {
    use ExecutionEvent as E;
    use ExecutionStatus as S;
    let to = match (from, event) {
        (S::Running, E::StepAdvanced) => S::Running,
        // A paused execution still records the result of the job that was in flight; it
        // stays paused at the new step boundary.
        (S::Paused, E::StepAdvanced) => S::Paused,
        (S::Running | S::Paused | S::Blocked, E::Finish) => S::Completed,
        (S::Running | S::Paused | S::Blocked, E::Fail) => S::Failed,
        (S::Running, E::Park) => S::Blocked,
        (S::Blocked, E::Unpark) => S::Running,
        (S::Running | S::Blocked, E::Pause) => S::Paused,
        (S::Paused, E::Resume) => S::Running,
        (S::Running | S::Blocked | S::Paused, E::Cancel) => S::Cancelled,
        (S::Failed | S::Cancelled, E::Retry) => S::Running,
        (_, E::Restart) => S::Running,
        _ => {
            return Err(IllegalTransition {
                entity: "execution",
                from: from.as_str().to_string(),
                event: format!("{event:?}").to_lowercase(),
            });
        }
    };
    Ok(to)
}

/// Status of one step within an execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached yet.
    Pending,
    /// Its job waits for a worker.
    Queued,
    /// Its job is leased and running.
    Running,
    /// Waiting on a poll, a timer or an asynchronous result.
    Waiting,
    /// Waiting for a human.
    Blocked,
    /// Done with success.
    Succeeded,
    /// Done with failure.
    Failed,
    /// Skipped by a condition.
    Skipped,
    /// Its job was cancelled.
    Cancelled,
}

impl StepStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Blocked => "blocked",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// Why an execution failed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A step's job failed after its retries (or with a non-retryable error).
    JobFailed,
    /// A precondition refused the work before it ran.
    Preflight,
    /// A poll budget or time limit was spent.
    Timeout,
    /// A human rejected an approval.
    Rejected,
    /// A step job was cancelled, or an operator stopped the execution.
    Cancelled,
    /// Anything else.
    Unknown,
}

/// The failure record of an execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Category.
    pub kind: FailureKind,
    /// One line for humans.
    pub message: String,
    /// More detail (the last attempt's error), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Name of the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Exit code of the failed command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// End of the failed command's standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// The run (1-based) in which it happened.
    pub run: u32,
    /// When.
    pub occurred_at: Millis,
}

/// The runtime state of one step.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    /// Step name (from the snapshot).
    pub name: String,
    /// Step kind name.
    pub kind: String,
    /// Current status.
    pub status: StepStatus,
    /// The step's current job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Attempts started for this step (across its job's retries).
    #[serde(default)]
    pub attempts: u32,
    /// Start of the first attempt of this run of the step; set once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When the step settled; set once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// Output of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Error of the latest failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<JobError>,
    /// A gate's progress: polls, helper runs, verdicts (gate steps that started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::gate::GateState>,
    /// The approval this step waits for or got (approval steps, and steps with
    /// `requires_approval` once their job succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::ApprovalState>,
    /// The latest request for changes that made this step run again; its runs see it in
    /// their context as `feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<crate::approval::Feedback>,
    /// When a `sleep` step wakes (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Millis>,
}

impl StepRun {
    /// A step not reached yet.
    pub fn new(def: &StepDef) -> Self {
        Self { name: def.name.clone(), kind: def.kind.name().to_string(), ..Self::blank() }
    }

    /// Back to `pending` for a new run of the step; the feedback of a request for changes is
    /// kept (the next run should see it).
    pub fn reset(&mut self) {
        let feedback = self.feedback.take();
        *self = Self { name: std::mem::take(&mut self.name), kind: std::mem::take(&mut self.kind), feedback, ..Self::blank() };
    }

    fn blank() -> Self {
        Self {
            name: String::new(),
            kind: String::new(),
            status: StepStatus::Pending,
            job_id: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            output: None,
            last_error: None,
            gate: None,
            approval: None,
            feedback: None,
            wake_at: None,
        }
    }
}

/// One run of a pipeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// `ex_<shard>_<ULID>`.
    pub id: String,
    /// The pipeline it runs.
    pub pipeline_id: String,
    /// The version of that pipeline it snapshotted.
    pub pipeline_version: u32,
    /// The snapshot.
    pub pipeline: Pipeline,
    /// Input given at start.
    pub input: Value,
    /// At most one live execution per target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Starts with the same key return this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Run counter (1 for the first run; retry and restart add one).
    pub run: u32,
    /// Current status.
    pub status: ExecutionStatus,
    /// Index of the current step.
    pub current: usize,
    /// One entry per pipeline step.
    pub steps: Vec<StepRun>,
    /// Set while failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Earlier failures, oldest first (at most [`MAX_FAILURE_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_history: Vec<Failure>,
    /// When it was created.
    pub created_at: Millis,
    /// When the current run started.
    pub started_at: Millis,
    /// When it became terminal; set once per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// When it was paused; set once per pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Millis>,
    /// Operator actions on this execution, oldest first (at most [`MAX_AUDIT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
    /// Outputs of succeeded steps that a restart reset, oldest first (at most
    /// [`MAX_OUTPUT_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_history: Vec<OutputRecord>,
    /// Last write.
    pub updated_at: Millis,
    /// Revision, bumped by every write; the compare-and-set token. Not part of the stored
    /// document (the store keeps it beside the document).
    #[serde(default)]
    pub rev: u64,
}

/// Most entries kept in `audit`.
pub const MAX_AUDIT: usize = 100;

/// Most entries kept in `output_history`.
pub const MAX_OUTPUT_HISTORY: usize = 50;

/// One operator action, as shown on the execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `cancel`, `retry`, `restart`, `pause`, `resume`, `job.cancel`, …
    pub action: String,
    /// The subject of the caller's token (`anonymous` when authentication is off).
    pub actor: String,
    /// Why, as the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub at: Millis,
    /// The run it started or acted on.
    pub run: u32,
}

/// The output of a step that a restart reset.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Step name.
    pub step: String,
    /// Step index.
    pub index: usize,
    /// The run that produced it.
    pub run: u32,
    /// The output.
    pub output: Value,
    /// When that run of the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
}

/// Appends to a capped history, dropping the oldest entries.
pub(crate) fn push_capped<T>(list: &mut Vec<T>, item: T, cap: usize) {
    list.push(item);
    if list.len() > cap {
        let excess = list.len() - cap;
        list.drain(..excess);
    }
}

/// A job named by a plan, with the queue the store needs to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    /// The job id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its kind (which decides who leases it: see [`crate::pipeline::is_builtin_job_kind`]).
    pub kind: String,
}

impl Execution {
    /// The live job of the current step, if it has one.
    pub fn current_job(&self) -> Option<JobRef> {
        let id = self.steps.get(self.current)?.job_id.clone()?;
        let def = self.pipeline.steps.get(self.current)?;
        let (queue, kind) = match &def.kind {
            StepKind::Gate(gate) => crate::gate::live_job_lane(gate, def, self.steps[self.current].gate.as_ref()),
            _ => (def.queue.clone(), def.kind.name().to_string()),
        };
        Some(JobRef { id, queue, kind })
    }
}

/// What to write, enqueue and append; the store commits it atomically.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The execution's next state; `None` leaves it as it is.
    pub execution: Option<Execution>,
    /// Release the live slot of this target (the execution became terminal).
    pub release_target: Option<String>,
    /// Claim the live slot of this target for the execution (a retry or restart of a
    /// terminal execution); the commit is refused with the holder if another has it.
    pub claim_target: Option<String>,
    /// Jobs of the execution to stop: a pending one is cancelled, a running one is marked
    /// and its worker told to kill it. Whichever it is, is decided at commit time.
    pub stop_jobs: Vec<JobRef>,
    /// Jobs to create.
    pub jobs: Vec<NewJob>,
    /// Events to append.
    pub events: Vec<Event>,
}

pub(crate) fn set_once(slot: &mut Option<Millis>, value: Millis) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// Builds the job that runs `step` (index `index`) of execution `execution_id`.
pub fn step_job(execution_id: &str, index: usize, step: &StepDef, job_id: String) -> NewJob {
    let payload = match &step.kind {
        StepKind::Noop { output } => json!({ "output": output.clone().unwrap_or(Value::Null) }),
        StepKind::External { params } => json!({ "params": params.clone().unwrap_or(Value::Null) }),
        _ => Value::Null,
    };
    NewJob {
        retry: step.retry.clone(),
        timeout_ms: step.timeout_ms,
        execution_id: Some(execution_id.to_string()),
        step: u32::try_from(index).ok(),
        ..NewJob::new(job_id, step.queue.clone(), step.kind.name(), payload)
    }
}

pub(crate) fn enqueued_event(job: &NewJob) -> Event {
    Event::new(
        names::JOB_ENQUEUED,
        json!({
            "job_id": job.id, "queue": job.queue, "kind": job.kind,
            "execution_id": job.execution_id, "step": job.step,
        }),
    )
}

/// What a start asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// The pipeline (current version).
    pub pipeline: Pipeline,
    /// Its version number.
    pub pipeline_version: u32,
    /// Execution input.
    pub input: Value,
    /// Optional target.
    pub target: Option<String>,
    /// Optional idempotency key.
    pub idempotency_key: Option<String>,
}

/// Plans a new execution with id `id`, whose first step's job gets `first_job_id`.
pub fn plan_start(req: StartRequest, id: String, first_job_id: String, now: Millis) -> Plan {
    let steps: Vec<StepRun> = req.pipeline.steps.iter().map(StepRun::new).collect();
    let mut exec = Execution {
        id: id.clone(),
        pipeline_id: req.pipeline.id.clone(),
        pipeline_version: req.pipeline_version,
        pipeline: req.pipeline,
        input: req.input,
        target: req.target,
        idempotency_key: req.idempotency_key,
        run: 1,
        status: ExecutionStatus::Running,
        current: 0,
        steps,
        failure: None,
        failure_history: Vec::new(),
        audit: Vec::new(),
        output_history: Vec::new(),
        created_at: now,
        started_at: now,
        finished_at: None,
        paused_at: None,
        updated_at: now,
        rev: 0,
    };
    let mut plan = Plan::default();
    plan.events.push(Event::new(
        names::EXECUTION_STARTED,
        json!({
            "execution_id": id, "pipeline": exec.pipeline_id,
            "pipeline_version": exec.pipeline_version, "target": exec.target, "run": 1,
        }),
    ));
    let mut first = Some(first_job_id);
    crate::steps::enter(&mut exec, 0, &mut plan, now, &mut || first.take().unwrap_or_default());
    plan.execution = Some(exec);
    plan
}

impl Execution {
    /// Whether `job` is the live job of its step in this execution (a stale job, one of an
    /// earlier run or of a cancelled execution, is not).
    pub fn owns(&self, job: &Job) -> bool {
        let Some(index) = job.step.and_then(|s| usize::try_from(s).ok()) else { return false };
        self.status.is_live()
            && index == self.current
            && self.steps.get(index).and_then(|s| s.job_id.as_deref()) == Some(job.id.as_str())
    }

    /// The document handed to a step as `SLUICE_CONTEXT` and used to render placeholders:
    /// `{"execution": {...}, "input": {...}, "steps": {"<name>": {"status", "output"}}}`.
    /// Only steps before `upto` are included; a step run again after a request for changes
    /// also gets `"feedback": {"text", "by", "at", "from_step"}`.
    pub fn context(&self, upto: usize) -> Value {
        let mut steps = serde_json::Map::new();
        for s in self.steps.iter().take(upto) {
            steps.insert(
                s.name.clone(),
                json!({ "status": s.status, "output": s.output.clone().unwrap_or(Value::Null) }),
            );
        }
        let mut context = json!({
            "execution": {
                "id": self.id, "pipeline": self.pipeline_id, "run": self.run,
                "target": self.target, "step": self.steps.get(upto).map(|s| s.name.clone()),
            },
            "input": self.input,
            "steps": steps,
        });
        if let Some(feedback) = self.steps.get(upto).and_then(|s| s.feedback.as_ref()) {
            context["feedback"] = json!(feedback);
        }
        context
    }

    /// Folds the live state of the current step's job into the view (a leased job shows
    /// its step as `running`, with its attempt count).
    pub fn observe(&mut self, current_job: &Job) {
        let current = self.current;
        if let Some(step) = self.steps.get_mut(current)
            && step.job_id.as_deref() == Some(current_job.id.as_str())
            && step.status == StepStatus::Queued
        {
            step.attempts = step.attempts.max(current_job.attempts);
            if current_job.status == crate::job::JobStatus::Running {
                step.status = StepStatus::Running;
                if let Some(started) = current_job.started_at {
                    set_once(&mut step.started_at, started);
                }
            }
        }
    }

    /// Fails the execution with `failure`: its event goes into `plan`, the target is
    /// released.
    pub(crate) fn fail_into(&mut self, failure: Failure, plan: &mut Plan, now: Millis) {
        self.status = ExecutionStatus::Failed;
        set_once(&mut self.finished_at, now);
        self.updated_at = now;
        plan.events.push(Event::new(
            names::EXECUTION_FAILED,
            json!({
                "execution_id": self.id, "run": self.run, "kind": failure.kind,
                "step": failure.step, "message": failure.message,
            }),
        ));
        self.failure = Some(failure);
        plan.release_target.clone_from(&self.target);
    }
}

fn job_event(kind: &str, job: &Job, extra: Value) -> Event {
    let mut data = json!({
        "job_id": job.id, "queue": job.queue, "kind": job.kind, "attempt": job.attempts,
        "execution_id": job.execution_id, "step": job.step,
    });
    if let (Some(map), Value::Object(extra)) = (data.as_object_mut(), extra) {
        map.extend(extra);
    }
    Event::new(kind, data)
}

/// The events a job's settlement appends, whoever owns the job.
pub fn settlement_events(job: &Job, settlement: &Settlement) -> Vec<Event> {
    match settlement {
        Settlement::Completed { .. } => vec![job_event(names::JOB_COMPLETED, job, json!({}))],
        Settlement::Retry { error, at, delay_ms } => vec![
            job_event(names::JOB_FAILED, job, json!({ "will_retry": true, "error": error.message })),
            job_event(
                names::JOB_RETRYING,
                job,
                json!({ "next_attempt_at": at, "backoff_ms": delay_ms }),
            ),
        ],
        Settlement::Failed { error } => vec![job_event(
            names::JOB_FAILED,
            job,
            json!({ "will_retry": false, "error": error.message }),
        )],
        Settlement::Deferred { .. } => Vec::new(),
    }
}

/// Plans what a step job's settlement does to its execution. `next_job_id` mints the id of
/// the next step's job (in the execution's shard).
///
/// A job the execution no longer owns (stale run, execution already terminal) changes
/// nothing but its own record; the caller should then not retry it (see
/// [`Execution::owns`]).
pub fn plan_settle(
    exec: &Execution,
    job: &Job,
    settlement: &Settlement,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) -> Plan {
    let events = settlement_events(job, settlement);
    if !exec.owns(job) {
        return Plan { events, ..Plan::default() };
    }
    let mut next = exec.clone();
    next.updated_at = now;
    let index = exec.current;
    {
        let step = &mut next.steps[index];
        step.attempts = step.attempts.max(job.attempts);
        if let Some(started) = job.started_at {
            set_once(&mut step.started_at, started);
        }
    }
    let mut plan = Plan { events, ..Plan::default() };
    if let StepKind::Gate(gate) = &exec.pipeline.steps[index].kind {
        crate::gate::settle(&mut next, index, gate, job, settlement, &mut plan, now, next_job_id);
        plan.execution = Some(next);
        return plan;
    }
    match settlement {
        Settlement::Deferred { .. } => next.steps[index].status = StepStatus::Waiting,
        Settlement::Retry { error, .. } => {
            let step = &mut next.steps[index];
            step.status = StepStatus::Queued;
            step.last_error = Some(error.clone());
        }
        Settlement::Completed { output } => {
            crate::steps::succeed(&mut next, index, output.clone(), Some((&job.id, job.attempts)), &mut plan, now, next_job_id);
        }
        Settlement::Failed { error } => {
            let step = &mut next.steps[index];
            step.status = StepStatus::Failed;
            step.last_error = Some(error.clone());
            set_once(&mut step.finished_at, now);
            let message = match error.exit_code {
                Some(code) => format!(
                    "step `{}` failed after {} attempt(s): exit code {code}",
                    step.name, job.attempts
                ),
                None => format!(
                    "step `{}` failed after {} attempt(s): {}",
                    step.name, job.attempts, error.message
                ),
            };
            let failure = Failure {
                kind: FailureKind::JobFailed,
                message,
                detail: Some(error.message.clone()),
                step: Some(step.name.clone()),
                exit_code: error.exit_code,
                stderr_tail: error.stderr_tail.clone(),
                run: next.run,
                occurred_at: now,
            };
            next.fail_into(failure, &mut plan, now);
        }
    }
    plan.execution = Some(next);
    plan
}

/// Plans what cancelling the pending job `job` does to its execution: the step is cancelled
/// and the execution fails with kind `cancelled`.
pub fn plan_job_cancelled(exec: &Execution, job: &Job, now: Millis) -> Plan {
    let events = vec![job_event(names::JOB_CANCELLED, job, json!({}))];
    if !exec.owns(job) {
        return Plan { events, ..Plan::default() };
    }
    let mut next = exec.clone();
    let index = next.current;
    let step = &mut next.steps[index];
    step.status = StepStatus::Cancelled;
    set_once(&mut step.finished_at, now);
    let failure = Failure {
        kind: FailureKind::Cancelled,
        message: format!("the job of step `{}` was cancelled", step.name),
        detail: Some(format!("job {} was cancelled while pending", job.id)),
        step: Some(step.name.clone()),
        exit_code: None,
        stderr_tail: None,
        run: next.run,
        occurred_at: now,
    };
    let mut plan = Plan { events, ..Plan::default() };
    next.fail_into(failure, &mut plan, now);
    plan.execution = Some(next);
    plan
}

/// The events of cancelling a standalone pending job.
pub fn job_cancelled_events(job: &Job) -> Vec<Event> {
    vec![job_event(names::JOB_CANCELLED, job, json!({}))]
}
