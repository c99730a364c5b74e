//! The pure domain model of sluice.
//!
//! Everything that decides *what happens next* lives here, as plain functions over plain
//! data: pipeline definitions and their validation, the job, step and execution state
//! machines, retry/backoff, and the planning functions that turn "this job settled" into
//! "write these records, enqueue these jobs, append these events". The crate has no async
//! runtime and no I/O; the `store` crate carries out the plans atomically on Redis.
//!
//! Invariants kept by this crate:
//! - a transition is either legal (and returns the next state) or an [`IllegalTransition`];
//!   nothing is silently coerced;
//! - time only enters through a [`Clock`] or an explicit `now` argument, so every decision
//!   is reproducible in tests;
//! - set-once timestamps (`started_at`, `finished_at`) are never moved by a replay.

pub mod approval;
pub mod cadence;
pub mod clock;
pub mod control;
pub mod describe;
pub mod duration;
pub mod event;
pub mod execution;
pub mod gate;
pub mod ids;
pub mod job;
pub mod pipeline;
mod pipeline_validate;
pub mod retry;
pub mod schedule;
mod steps;
#[cfg(test)]
mod testing;
pub mod template;

pub use cadence::Cadence;
pub use clock::{Clock, FakeClock, SystemClock};
pub use execution::{Execution, ExecutionStatus, Failure, FailureKind, StepRun, StepStatus};
pub use job::{Job, JobStatus, NewJob, Outcome};
pub use pipeline::{Pipeline, Problem, StepDef, StepKind};
pub use retry::{Backoff, RetryPolicy};
pub use schedule::Schedule;

/// Timestamps are milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {entity} cannot go from `{from}` on `{event}`")]
pub struct IllegalTransition {
    /// `job`, `step` or `execution`.
    pub entity: &'static str,
    /// The state the entity was in.
    pub from: String,
    /// The event that was refused.
    pub event: String,
}
