//! Typed events appended to the event stream on every state change.
//!
//! Names are stable strings (SPEC section 2). The payload always carries the ids needed to
//! find the records it is about (`job_id`, `execution_id`, `step`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stable event names.
pub mod names {
    /// An execution was created.
    pub const EXECUTION_STARTED: &str = "execution.started";
    /// A worker started an attempt of a step's job.
    pub const STEP_STARTED: &str = "execution.step.started";
    /// A step succeeded.
    pub const STEP_COMPLETED: &str = "execution.step.completed";
    /// The execution parked on a human.
    pub const EXECUTION_BLOCKED: &str = "execution.blocked";
    /// Someone approved, rejected or asked for changes on a step waiting for approval.
    pub const APPROVAL_VOTED: &str = "execution.approval.voted";
    /// The last step succeeded.
    pub const EXECUTION_COMPLETED: &str = "execution.completed";
    /// The execution failed (its failure record says why).
    pub const EXECUTION_FAILED: &str = "execution.failed";
    /// An operator cancelled the execution.
    pub const EXECUTION_CANCELLED: &str = "execution.cancelled";
    /// An operator retried the execution from its first step that did not succeed.
    pub const EXECUTION_RETRIED: &str = "execution.retried";
    /// An operator restarted the execution from a chosen step.
    pub const EXECUTION_RESTARTED: &str = "execution.restarted";
    /// An operator paused the execution (it stops at the next step boundary).
    pub const INSTANCE_PAUSED: &str = "workflow.instance.paused";
    /// An operator resumed a paused execution.
    pub const INSTANCE_RESUMED: &str = "workflow.instance.resumed";
    /// A job was created.
    pub const JOB_ENQUEUED: &str = "job.enqueued";
    /// A worker started an attempt.
    pub const JOB_STARTED: &str = "job.started";
    /// The job succeeded.
    pub const JOB_COMPLETED: &str = "job.completed";
    /// An attempt failed (`will_retry` says whether another follows).
    pub const JOB_FAILED: &str = "job.failed";
    /// Another attempt is scheduled.
    pub const JOB_RETRYING: &str = "job.retrying";
    /// A pending job was cancelled.
    pub const JOB_CANCELLED: &str = "job.cancelled";
    /// A running job's execution was stopped; its worker is told to kill it.
    pub const JOB_CANCEL_REQUESTED: &str = "job.cancel_requested";
    /// A schedule started an execution (a due time, or `run-now`).
    pub const SCHEDULE_FIRED: &str = "schedule.fired";
    /// A due time of a schedule started nothing: the target was busy, the fire was missed
    /// (`catch_up = "none"`), or the start failed; `reason` says which.
    pub const SCHEDULE_SKIPPED: &str = "schedule.skipped";
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable name from [`names`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Payload.
    pub data: Value,
}

impl Event {
    /// An event of `kind` with `data`.
    pub fn new(kind: &str, data: Value) -> Self {
        Self { kind: kind.to_string(), data }
    }
}
