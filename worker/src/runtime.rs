//! Running one job: start it under its lease, execute it, settle it through the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::job::{Job, JobError, JobStatus, Outcome, kinds};
use sluice_core::pipeline::StepKind;
use sluice_core::{Execution, template};
use sluice_store::engine::{Engine, Settled};
use sluice_store::{JobStart, Lane, Notifier, StoreError};
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::command::{self, CommandSpec};
use crate::inflight::Inflight;

/// A job reserved for this worker, with its lease token.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    /// The job as reserved (status `pending`).
    pub job: Job,
    /// The lease token that fences every write about it.
    pub token: String,
}

/// State shared by the backend, the handler and the heartbeat of one worker process.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) config: WorkerConfig,
    pub(crate) worker_id: String,
    pub(crate) inflight: Inflight,
    pub(crate) notifier: Notifier,
    pub(crate) shutting_down: AtomicBool,
    cursor: AtomicUsize,
    sources: Vec<(u32, String)>,
    healthy: AtomicBool,
}

impl Runtime {
    pub(crate) fn new(engine: Engine, config: WorkerConfig) -> Self {
        let inflight = Inflight::default();
        let stopper = inflight.clone();
        let notifier = Notifier::spawn(engine.store(), &config.queues, move |job| stopper.stop(job));
        let sources = (0..engine.store().shards())
            .flat_map(|s| config.queues.iter().map(move |q| (s, q.clone())))
            .collect();
        Self {
            worker_id: config.worker_id.clone(),
            engine,
            config,
            inflight,
            notifier,
            shutting_down: AtomicBool::new(false),
            cursor: AtomicUsize::new(0),
            sources,
            healthy: AtomicBool::new(true),
        }
    }

    pub(crate) fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Slots neither running nor already reserved.
    pub(crate) fn free_slots(&self) -> usize {
        self.config.concurrency.saturating_sub(self.inflight.len())
    }

    /// Every shard × queue pair, starting one further each call (round-robin fairness).
    pub(crate) fn next_sources(&self) -> Vec<(u32, String)> {
        let n = self.sources.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n).map(|i| self.sources[(start + i) % n].clone()).collect()
    }

    pub(crate) fn report_store_error(&self, what: &str, e: &StoreError) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, operation = what, "redis is unavailable; retrying with backoff");
        }
    }

    pub(crate) fn set_healthy(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("redis is reachable again");
        }
    }

    /// Gives a held job back to its queue; a lost lease is fine (someone else has it). The
    /// jobs a worker holds are all of the builtin lane: the only one `Store::lease` reads.
    pub(crate) async fn release(&self, id: &str, queue: &str, token: &str) {
        self.inflight.remove(id);
        for attempt in 0..5u32 {
            match self.engine.store().release(id, queue, Lane::Builtin, token, self.engine.now()).await {
                Ok(true) => {
                    tracing::info!(job.id = %id, queue = %queue, "released an unfinished job to its queue");
                    return;
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(job.id = %id, error = %e, "cannot release a job; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
                }
            }
        }
    }

    /// Runs one reserved job to its settlement.
    pub(crate) async fn run(self: &Arc<Self>, leased: LeasedJob) {
        let LeasedJob { mut job, token } = leased;
        let id = job.id.clone();
        let now = self.engine.now();
        let started = loop {
            match self.engine.store().start(&job, &token, now + self.lease_ttl_ms(), now).await {
                Ok(s) => break s,
                Err(e) => {
                    if self.shutting_down.load(Ordering::Relaxed) {
                        return;
                    }
                    self.report_store_error("start", &e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let attempt = match started {
            JobStart::Started { attempt } => attempt,
            other => {
                self.inflight.remove(&id);
                tracing::info!(job.id = %id, outcome = ?other, "reserved job not started");
                return;
            }
        };
        job.attempts = attempt;
        job.status = JobStatus::Running;
        job.started_at = Some(now);
        let cancel = self.inflight.cancel_token(&id).unwrap_or_default();
        let guard = Guard { rt: self.clone(), job: job.clone(), token: token.clone(), armed: true };
        let started_at = std::time::Instant::now();
        let (mut outcome, exec) = self.execute(&job, cancel.clone()).await;
        if self.inflight.is_stopped(&id) {
            // An operator stopped the execution: record the attempt as cancelled (the
            // execution no longer owns the job, so this changes nothing else).
            tracing::info!(job.id = %id, "job stopped: its execution was cancelled or restarted");
            outcome = Outcome::Failed(JobError::terminal("stopped: the execution was cancelled or restarted by an operator"));
        } else if cancel.is_cancelled() {
            // The lease was lost while running: the result would be refused.
            tracing::warn!(job.id = %id, "lease lost while running; result dropped");
            guard.disarm();
            return;
        }
        let settled = loop {
            match self.engine.settle(&job, &token, &outcome, exec.clone(), 0).await {
                Ok(s) => break Some(s),
                Err(StoreError::Redis(e)) => {
                    self.report_store_error("settle", &StoreError::Redis(e));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(job.id = %id, error = %e, "cannot settle a job");
                    break None;
                }
            }
        };
        guard.disarm();
        self.inflight.remove(&id);
        let duration_ms = u64::try_from(started_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        match settled {
            Some(Settled::Applied(s)) => {
                tracing::info!(job.id = %id, execution.id = job.execution_id.as_deref().unwrap_or(""), status = s.status().as_str(), duration_ms, "job settled");
            }
            Some(Settled::LeaseLost) => {
                tracing::warn!(job.id = %id, duration_ms, "lease lost before the result was recorded; result dropped");
            }
            None => {}
        }
    }

    /// Executes the job; returns its outcome and, for a step job, the execution as read.
    async fn execute(&self, job: &Job, cancel: CancellationToken) -> (Outcome, Option<Execution>) {
        let Some(exec_id) = &job.execution_id else {
            return (self.execute_standalone(job, cancel).await, None);
        };
        let exec = loop {
            match self.engine.store().get_execution(exec_id).await {
                Ok(e) => break e,
                Err(StoreError::Redis(e)) => {
                    self.report_store_error("read execution", &StoreError::Redis(e));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return (Outcome::Failed(JobError::terminal(format!("cannot read execution {exec_id}: {e}"))), None);
                }
            }
        };
        let Some(exec) = exec else {
            return (Outcome::Failed(JobError::terminal(format!("execution {exec_id} does not exist"))), None);
        };
        if !exec.owns(job) {
            let error = JobError::terminal(format!(
                "execution {exec_id} is {} and no longer runs this job",
                exec.status.as_str()
            ));
            return (Outcome::Failed(error), Some(exec));
        }
        let index = exec.current;
        let step = &exec.pipeline.steps[index];
        let outcome = match &step.kind {
            StepKind::Noop { output } => Outcome::Completed(output.clone().unwrap_or(Value::Null)),
            StepKind::Command { run, env, cwd } => {
                let context = exec.context(index);
                match render_command(run, env, cwd.as_deref(), &context) {
                    Err(message) => Outcome::Failed(JobError::terminal(format!("step `{}`: {message}", step.name))),
                    Ok((argv, env, cwd)) => {
                        let mut spec = CommandSpec::new(argv);
                        spec.env = env;
                        spec.cwd = cwd.map(PathBuf::from);
                        spec.timeout = job.timeout_ms.map(Duration::from_millis);
                        spec.context = context;
                        spec.kill_grace = self.config.kill_grace;
                        spec.sluice_env = vec![
                            ("SLUICE_EXECUTION_ID".into(), exec.id.clone()),
                            ("SLUICE_STEP".into(), step.name.clone()),
                            ("SLUICE_ATTEMPT".into(), job.attempts.to_string()),
                            ("SLUICE_RUN".into(), exec.run.to_string()),
                            ("SLUICE_JOB_ID".into(), job.id.clone()),
                        ];
                        run_command(spec, cancel).await
                    }
                }
            }
            other => Outcome::Failed(JobError::terminal(format!(
                "step `{}`: this worker has no executor for step kind `{}`",
                step.name,
                other.name()
            ))),
        };
        (outcome, Some(exec))
    }

    async fn execute_standalone(&self, job: &Job, cancel: CancellationToken) -> Outcome {
        match job.kind.as_str() {
            kinds::NOOP => Outcome::Completed(job.payload.get("output").cloned().unwrap_or(Value::Null)),
            kinds::COMMAND => {
                let run: Vec<String> = job
                    .payload
                    .get("run")
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default();
                if run.is_empty() {
                    return Outcome::Failed(JobError::terminal("payload.run must be a non-empty array of strings"));
                }
                let env = job
                    .payload
                    .get("env")
                    .and_then(|e| serde_json::from_value(e.clone()).ok())
                    .unwrap_or_default();
                let mut spec = CommandSpec::new(run);
                spec.env = env;
                spec.cwd = job.payload.get("cwd").and_then(Value::as_str).map(PathBuf::from);
                spec.timeout = job.timeout_ms.map(Duration::from_millis);
                spec.context = json!({
                    "job": { "id": job.id, "queue": job.queue, "attempt": job.attempts },
                    "payload": job.payload,
                });
                spec.kill_grace = self.config.kill_grace;
                spec.sluice_env = vec![
                    ("SLUICE_JOB_ID".into(), job.id.clone()),
                    ("SLUICE_ATTEMPT".into(), job.attempts.to_string()),
                ];
                run_command(spec, cancel).await
            }
            other => Outcome::Failed(JobError::terminal(format!(
                "this worker has no executor for job kind `{other}`"
            ))),
        }
    }
}

async fn run_command(spec: CommandSpec, cancel: CancellationToken) -> Outcome {
    match command::run(spec, cancel).await {
        Ok(result) => command::outcome(&result),
        Err(e) => Outcome::Failed(e.into_job_error()),
    }
}

type Rendered = (Vec<String>, std::collections::BTreeMap<String, String>, Option<String>);

/// Substitutes `{{ … }}` placeholders in `run`, `env` values and `cwd`.
fn render_command(
    run: &[String],
    env: &std::collections::BTreeMap<String, String>,
    cwd: Option<&str>,
    context: &Value,
) -> Result<Rendered, String> {
    let argv = run.iter().map(|a| template::render(a, context)).collect::<Result<Vec<_>, _>>()?;
    let env = env
        .iter()
        .map(|(k, v)| template::render(v, context).map(|v| (k.clone(), v)))
        .collect::<Result<_, _>>()?;
    let cwd = cwd.map(|c| template::render(c, context)).transpose()?;
    Ok((argv, env, cwd))
}

/// Settles a job whose handler never finished (a panic, or the worker's time ceiling) as a
/// failed, retryable attempt. During shutdown it does nothing: the shutdown releases the job.
struct Guard {
    rt: Arc<Runtime>,
    job: Job,
    token: String,
    armed: bool,
}

impl Guard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed || self.rt.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let rt = self.rt.clone();
        let job = self.job.clone();
        let token = self.token.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let outcome = Outcome::Failed(JobError::retryable(
                    "the job's handler stopped before finishing (panic or worker time ceiling)",
                ));
                if let Err(e) = rt.engine.settle(&job, &token, &outcome, None, 0).await {
                    tracing::error!(job.id = %job.id, error = %e, "cannot settle an abandoned job");
                }
                rt.inflight.remove(&job.id);
            });
        }
    }
}
