//! Jobs: the queue-level unit of work, its state machine and the retry decision.
//!
//! ```text
//!            enqueue                 start (lease holder)
//!   ──────────────▶ pending ───────────────────────────▶ running
//!                    │  ▲   ◀── retry / release / reclaim ──┘ │
//!             cancel │  └────────────────────────────────────┤
//!                    ▼                                        ├── complete ─▶ completed
//!                cancelled                                    └── fail ─────▶ failed
//! ```
//!
//! A `pending` job may be *reserved* by a worker (it holds a lease token while the job sits
//! in the worker's prefetch buffer); it stays `pending`, so it can still be cancelled, and the
//! worker must `start` it (fenced by the token) before running it. Every write by a lease
//! holder is fenced by the token; a holder whose lease was lost changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::retry::RetryPolicy;
use crate::{IllegalTransition, Millis};

/// Stable names of built-in job kinds.
pub mod kinds {
    /// Runs a program (`payload.run`), or a pipeline `command` step.
    pub const COMMAND: &str = "command";
    /// Does nothing and succeeds; for tests and benchmarks of the engine.
    pub const NOOP: &str = "noop";
}

/// Status of a job.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in its queue (ready, delayed until `scheduled_at`, or reserved by a worker's
    /// prefetch). Left by a worker's `start`, or by `cancel`.
    Pending,
    /// Started by a lease holder. Left by complete / fail / retry (the holder), release
    /// (graceful shutdown) or reclaim (the scheduler, once the lease expired).
    Running,
    /// Terminal: the last attempt succeeded.
    Completed,
    /// Terminal: retries spent or a non-retryable failure (the dead-letter set).
    Failed,
    /// Terminal: cancelled while pending.
    Cancelled,
}

impl JobStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// Every status, for table tests.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
}

/// Events that move a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// A lease holder starts the job.
    Start,
    /// The attempt succeeded.
    Complete,
    /// The attempt failed and no further attempt will run.
    Fail,
    /// The attempt failed and another attempt is scheduled.
    Retry,
    /// The holder gives the job back unfinished (graceful shutdown); the attempt is not
    /// counted.
    Release,
    /// An operator cancels the job.
    Cancel,
}

impl JobEvent {
    /// Every event, for table tests.
    pub const ALL: [JobEvent; 6] = [
        JobEvent::Start,
        JobEvent::Complete,
        JobEvent::Fail,
        JobEvent::Retry,
        JobEvent::Release,
        JobEvent::Cancel,
    ];
}

/// The job state machine.
///
/// # Errors
/// [`IllegalTransition`] when `event` is not allowed in `from`.
pub fn transition(from: JobStatus, event: JobEvent) -> Result<JobStatus, IllegalTransition> {
    use JobEvent as E;
    use JobStatus as S;
    match (from, event) {
        (S::Pending, E::Start) => Ok(S::Running),
        (S::Pending, E::Cancel) => Ok(S::Cancelled),
        (S::Pending, E::Release) => Ok(S::Pending),
        (S::Running, E::Complete) => Ok(S::Completed),
        (S::Running, E::Fail) => Ok(S::Failed),
        (S::Running, E::Retry | E::Release) => Ok(S::Pending),
        _ => Err(IllegalTransition {
            entity: "job",
            from: from.as_str().to_string(),
            event: format!("{event:?}").to_lowercase(),
        }),
    }
}

/// A job's lease: who holds it, with which fencing token, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Fencing token; every write by the holder must present it.
    pub token: String,
    /// The worker that holds the lease.
    pub worker: String,
    /// When the lease expires unless extended by a heartbeat.
    pub deadline: Millis,
}

/// A failure of one attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobError {
    /// What happened, one line.
    pub message: String,
    /// Whether another attempt may help (network errors, timeouts, non-zero exits) or not
    /// (invalid input, a placeholder that does not resolve).
    #[serde(default)]
    pub retryable: bool,
    /// Exit code of a command, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the command's standard error, bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

impl JobError {
    /// A retryable failure with `message`.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, ..Self::default() }
    }

    /// A failure that another attempt cannot fix.
    pub fn terminal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, ..Self::default() }
    }
}

/// What an executor reports for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The attempt succeeded with this output (`null` when there is none).
    Completed(Value),
    /// The attempt failed.
    Failed(JobError),
    /// The attempt handed its result to someone else (an `http` step answered 202): the job
    /// stays `running`, its lease held for the poster of the result until `deadline` (ms),
    /// after which the attempt counts as timed out.
    Deferred {
        /// When the posted result is due at the latest.
        deadline: Millis,
    },
}

/// A job record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `job_<shard>_<ULID>`.
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Stable kind name (`command`, `noop`, …).
    pub kind: String,
    /// Kind-specific input.
    pub payload: Value,
    /// Current status.
    pub status: JobStatus,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Retry policy, including `max_attempts`.
    pub retry: RetryPolicy,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Not before this time.
    pub scheduled_at: Millis,
    /// While pending, no other pending job of the queue has this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// Present while a worker holds the job.
    ///
    /// Left out of the documented schema: the token is a capability of the holder, so the
    /// HTTP API serves (and documents) the lease without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub lease: Option<Lease>,
    /// Output of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Failure of the latest failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<JobError>,
    /// When the job was enqueued.
    pub created_at: Millis,
    /// Last write.
    pub updated_at: Millis,
    /// Start of the current (or last) attempt; set once per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When the job became terminal; set once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// The execution this job runs a step of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// Index of that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The id to give it (carries its shard).
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Stable kind name.
    pub kind: String,
    /// Kind-specific input.
    pub payload: Value,
    /// Higher runs first (clamped to ±1000).
    pub priority: i32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Time limit of one attempt.
    pub timeout_ms: Option<u64>,
    /// Not before this time; `None` or a past time means ready now.
    pub run_at: Option<Millis>,
    /// Deduplication key among pending jobs of the queue.
    pub dedupe_key: Option<String>,
    /// Owning execution.
    pub execution_id: Option<String>,
    /// Step index in that execution.
    pub step: Option<u32>,
}

impl NewJob {
    /// A standalone job with id `id`: ready now, priority 0, the default retry policy, no
    /// time limit, no dedupe key. Set the other fields on the result as needed.
    pub fn new(id: String, queue: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        Self {
            id,
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            run_at: None,
            dedupe_key: None,
            execution_id: None,
            step: None,
        }
    }
}

/// Bounds of `priority`.
pub const MAX_PRIORITY: i32 = 1000;

/// What happens to a running job after an attempt, decided by [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Terminal success.
    Completed {
        /// The attempt's output.
        output: Value,
    },
    /// Back to pending, due at `at`.
    Retry {
        /// The failure of this attempt.
        error: JobError,
        /// When the next attempt may start.
        at: Millis,
        /// `at - now`.
        delay_ms: u64,
    },
    /// Terminal failure.
    Failed {
        /// The failure of the last attempt.
        error: JobError,
    },
    /// Still running: the result will be posted back (see [`Outcome::Deferred`]).
    Deferred {
        /// When the posted result is due at the latest.
        deadline: Millis,
    },
}

impl Settlement {
    /// The status the job ends in.
    pub fn status(&self) -> JobStatus {
        match self {
            Settlement::Completed { .. } => JobStatus::Completed,
            Settlement::Retry { .. } => JobStatus::Pending,
            Settlement::Failed { .. } => JobStatus::Failed,
            Settlement::Deferred { .. } => JobStatus::Running,
        }
    }
}

/// Decides what an attempt's outcome does to the job: complete, retry after a backoff, or
/// fail for good. `jitter_sample` is uniform in `[0, 1)`.
pub fn decide(job: &Job, outcome: &Outcome, now: Millis, jitter_sample: f64) -> Settlement {
    match outcome {
        Outcome::Completed(output) => Settlement::Completed { output: output.clone() },
        Outcome::Failed(error) if error.retryable && job.retry.allows_another(job.attempts) => {
            let delay = job.retry.delay_after(job.attempts.max(1), jitter_sample);
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let at = now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
            Settlement::Retry { error: error.clone(), at, delay_ms }
        }
        Outcome::Failed(error) => Settlement::Failed { error: error.clone() },
        Outcome::Deferred { deadline } => Settlement::Deferred { deadline: *deadline },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_covers_every_pair() {
        use JobEvent as E;
        use JobStatus as S;
        let allowed = [
            (S::Pending, E::Start, S::Running),
            (S::Pending, E::Cancel, S::Cancelled),
            (S::Pending, E::Release, S::Pending),
            (S::Running, E::Complete, S::Completed),
            (S::Running, E::Fail, S::Failed),
            (S::Running, E::Retry, S::Pending),
            (S::Running, E::Release, S::Pending),
        ];
        for from in JobStatus::ALL {
            for event in JobEvent::ALL {
                let expected = allowed.iter().find(|(f, e, _)| *f == from && *e == event);
                match (transition(from, event), expected) {
                    (Ok(to), Some((_, _, want))) => assert_eq!(to, *want, "{from:?} {event:?}"),
                    (Err(err), None) => assert_eq!(err.entity, "job"),
                    (got, want) => panic!("{from:?} on {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn terminal_statuses_refuse_everything() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in JobEvent::ALL {
                assert!(transition(from, event).is_err());
            }
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("dead"), None);
    }

    fn job(attempts: u32, max_attempts: u32) -> Job {
        Job {
            id: "job_0_01JD0000000000000000000000".into(),
            queue: "default".into(),
            kind: kinds::NOOP.into(),
            payload: Value::Null,
            status: JobStatus::Running,
            priority: 0,
            attempts,
            retry: RetryPolicy {
                max_attempts,
                backoff: crate::retry::Backoff::Fixed,
                initial_ms: 500,
                max_ms: 500,
                jitter: false,
            },
            timeout_ms: None,
            scheduled_at: 0,
            dedupe_key: None,
            lease: None,
            result: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            finished_at: None,
            execution_id: None,
            step: None,
        }
    }

    #[test]
    fn retryable_failure_retries_after_backoff_until_attempts_are_spent() {
        let err = Outcome::Failed(JobError::retryable("exit 1"));
        match decide(&job(1, 3), &err, 10_000, 0.0) {
            Settlement::Retry { at, delay_ms, .. } => {
                assert_eq!(delay_ms, 500);
                assert_eq!(at, 10_500);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide(&job(3, 3), &err, 0, 0.0), Settlement::Failed { .. }));
    }

    #[test]
    fn terminal_failure_never_retries_and_success_completes() {
        let err = Outcome::Failed(JobError::terminal("bad input"));
        assert!(matches!(decide(&job(1, 5), &err, 0, 0.0), Settlement::Failed { .. }));
        let ok = Outcome::Completed(serde_json::json!({"a": 1}));
        assert_eq!(
            decide(&job(1, 5), &ok, 0, 0.0),
            Settlement::Completed { output: serde_json::json!({"a": 1}) }
        );
    }
}
