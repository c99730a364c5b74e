//! The sluice worker service.
//!
//! A worker leases jobs from its queues (in every shard), runs them, and settles each
//! attempt through the engine, which advances the job's execution in the same atomic write.
//! It leases from the builtin lane of each queue only: jobs of other kinds (an `external`
//! step, a standalone job of a custom kind) wait in the queue's external lane for external
//! workers, which lease them over the HTTP API.
//! It is built on the apalis runtime (`Monitor`, `WorkerBuilder`, tower layers) over the
//! sluice store as its backend ([`backend::StoreBackend`]).
//!
//! Contract: at-least-once execution, exactly-once application. A job may run again if its
//! worker dies mid-run (a new attempt), but its result is applied once: every write is
//! fenced by the lease token, and an execution only advances at the revision it was read.

pub mod backend;
pub mod command;
pub mod gate;
pub mod http;
mod inflight;
mod runtime;
mod service;
pub mod tail;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use sluice_store::Pulse;

pub use runtime::LeasedJob;
pub use service::{Worker, WorkerError};

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to lease from.
    pub queues: Vec<String>,
    /// Jobs run at once (also the most jobs held, reserved or running).
    pub concurrency: usize,
    /// How long a lease lasts without a heartbeat; heartbeats run every third of it.
    pub lease_ttl: Duration,
    /// How long running jobs may finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Longest wait between lease attempts when no notification arrives.
    pub idle_poll: Duration,
    /// Between SIGTERM and SIGKILL when a command is stopped.
    pub kill_grace: Duration,
    /// A job running longer than this is abandoned and counted as a failed attempt.
    pub job_time_ceiling: Duration,
    /// Unique id of this worker process (host, pid and a random part).
    pub worker_id: String,
    /// A PEM file of certificate authorities that `https://` endpoints of the HTTP executors
    /// may be signed by, trusted besides the system's (see [`tls`]).
    pub ca_file: Option<PathBuf>,
    /// Beaten after every round of the heartbeat loop or the lease loop that succeeded
    /// against Redis, missed after every call Redis did not answer: a supervisor reads it
    /// to tell a worker that runs from one that is stuck (the systemd watchdog), and a
    /// ready worker from one cut off from Redis (its readiness probe and systemd status).
    pub pulse: Pulse,
    /// The heartbeat loop runs at least this often (besides every third of `lease_ttl`), so
    /// that `pulse` beats within each interval of a supervisor that reads it. Default: none.
    pub liveness_interval: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: vec!["default".into()],
            concurrency: 16,
            lease_ttl: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            idle_poll: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            job_time_ceiling: Duration::from_secs(24 * 3600),
            worker_id: default_worker_id(),
            ca_file: None,
            pulse: Pulse::new(),
            liveness_interval: None,
        }
    }
}

impl WorkerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the setting that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.queues.is_empty() {
            return Err("worker.queues must name at least one queue".into());
        }
        if self.concurrency == 0 {
            return Err("worker.concurrency must be at least 1".into());
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err("worker.lease_ttl must be at least 300ms".into());
        }
        if self
            .liveness_interval
            .is_some_and(|every| every < Duration::from_millis(10))
        {
            return Err("the liveness interval must be at least 10ms".into());
        }
        Ok(())
    }
}

/// This machine's host name (`host` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// `<host>-<pid>-<random>`: unique per process start, so a restarted worker never shares
/// an identity with its previous life.
pub fn default_worker_id() -> String {
    let host = host_name();
    let random = ulid::Ulid::generate().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &random[random.len() - 6..]
    )
}

/// A running job of `kind` with `payload`, attempt 1, of step 0 of execution `ex_1`.
#[cfg(test)]
pub(crate) fn test_job(kind: &str, payload: serde_json::Value) -> sluice_core::Job {
    let job = serde_json::json!({
        "id": "job_0_x", "queue": "default", "kind": kind, "payload": payload,
        "status": "running", "priority": 0, "attempts": 1,
        "retry": sluice_core::RetryPolicy::default(),
        "scheduled_at": 0, "created_at": 0, "updated_at": 0,
        "execution_id": "ex_1", "step": 0,
    });
    serde_json::from_value(job).expect("a valid job")
}
