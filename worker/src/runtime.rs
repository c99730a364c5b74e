//! Running one job: start it under its lease, execute it, settle it through the engine.
//! The process's metrics count each start (with the job's wait since it was due) and each
//! settlement (with the attempt's duration, and a probe's verdict).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::job::{Job, JobError, JobStatus, Outcome, Settlement, kinds};
use sluice_core::pipeline::{GateDef, Probe, StepKind};
use sluice_core::{Execution, Millis, template};
use sluice_store::engine::{Engine, Settled};
use sluice_store::metrics::JobOutcome;
use sluice_store::{JobStart, Lane, Notifier, StoreError};
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::command::{self, CommandSpec};
use crate::gate::{self, GateJob, HttpProbe};
use crate::http::{self, HttpClient, PostSpec};
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
    /// The client of every HTTP executor (steps, helpers, probes, standalone jobs).
    pub(crate) http: HttpClient,
    pub(crate) shutting_down: AtomicBool,
    cursor: AtomicUsize,
    sources: Vec<(u32, String)>,
    healthy: AtomicBool,
}

/// The waits between retries of a call that Redis did not answer: 200 ms, doubling up to
/// 2 s, so that an outage costs a few calls a second per held job, not a tight loop.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

impl Runtime {
    pub(crate) fn new(engine: Engine, config: WorkerConfig) -> Result<Self, String> {
        let http = HttpClient::new(config.ca_file.as_deref())?;
        let inflight = Inflight::default();
        let stopper = inflight.clone();
        let notifier = Notifier::spawn(engine.store(), &config.queues, move |job| stopper.stop(job));
        let sources = (0..engine.store().shards())
            .flat_map(|s| config.queues.iter().map(move |q| (s, q.clone())))
            .collect();
        Ok(Self {
            worker_id: config.worker_id.clone(),
            engine,
            config,
            inflight,
            notifier,
            shutting_down: AtomicBool::new(false),
            cursor: AtomicUsize::new(0),
            sources,
            healthy: AtomicBool::new(true),
            http,
        })
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

    /// Records a round that Redis did not answer: the worker is not ready (its pulse
    /// misses), and says so once per outage.
    pub(crate) fn report_store_error(&self, what: &str, e: &StoreError) {
        self.config.pulse.miss();
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, operation = what, "redis is unavailable; retrying with backoff");
        }
    }

    /// Records a round that succeeded against Redis: beats the pulse, and says so once after
    /// an outage.
    pub(crate) fn set_healthy(&self) {
        self.config.pulse.beat();
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
        let mut backoff = Backoff::new();
        // A retry after an unanswered call is safe: a start that Redis ran although its
        // answer was lost is answered again by the next one (same token, same attempt).
        let (started, now) = loop {
            let now = self.engine.now();
            match self.engine.store().start(&job, &token, now + self.lease_ttl_ms(), now).await {
                Ok(s) => break (s, now),
                Err(e) => {
                    if self.shutting_down.load(Ordering::Relaxed) {
                        return;
                    }
                    self.report_store_error("start", &e);
                    backoff.wait().await;
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
        self.engine.metrics().job_started(&job, now);
        let cancel = self.inflight.cancel_token(&id).unwrap_or_default();
        let guard = Guard { rt: self.clone(), job: job.clone(), token: token.clone(), armed: true };
        let started_at = std::time::Instant::now();
        let (mut outcome, exec) = self.execute(&job, &token, cancel.clone()).await;
        let stopped = self.inflight.is_stopped(&id);
        if stopped {
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
        let mut backoff = Backoff::new();
        let settled = loop {
            match self.engine.settle(&job, &token, &outcome, exec.clone(), 0).await {
                Ok(s) => break Some(s),
                Err(StoreError::Redis(e)) => {
                    self.report_store_error("settle", &StoreError::Redis(e));
                    backoff.wait().await;
                }
                Err(e) => {
                    tracing::error!(job.id = %id, error = %e, "cannot settle a job");
                    break None;
                }
            }
        };
        guard.disarm();
        self.inflight.remove(&id);
        let ran = started_at.elapsed();
        let duration_ms = u64::try_from(ran.as_millis()).unwrap_or(u64::MAX);
        match settled {
            Some(Settled::Applied(s)) => {
                self.record_settled(&job, &outcome, &s, stopped, ran);
                tracing::info!(job.id = %id, execution.id = job.execution_id.as_deref().unwrap_or(""), status = s.status().as_str(), duration_ms, "job settled");
            }
            Some(Settled::LeaseLost) => {
                tracing::warn!(job.id = %id, duration_ms, "lease lost before the result was recorded; result dropped");
            }
            None => {}
        }
    }

    /// Counts a settled attempt: an attempt stopped by an operator as cancelled, any other
    /// by its settlement, and a probe's verdict.
    fn record_settled(&self, job: &Job, outcome: &Outcome, settlement: &Settlement, stopped: bool, ran: Duration) {
        let metrics = self.engine.metrics();
        if stopped {
            metrics.attempt_ended(job, JobOutcome::Cancelled, ran);
            return;
        }
        metrics.attempt_settled(job, settlement, ran);
        if let Some(poll) = gate::poll(job, outcome) {
            metrics.gate_polled(poll);
        }
    }

    /// Executes the job; returns its outcome and, for a step job, the execution as read.
    async fn execute(&self, job: &Job, token: &str, cancel: CancellationToken) -> (Outcome, Option<Execution>) {
        let Some(exec_id) = &job.execution_id else {
            return (self.execute_standalone(job, token, cancel).await, None);
        };
        let mut backoff = Backoff::new();
        let exec = loop {
            match self.engine.store().get_execution(exec_id).await {
                Ok(e) => break e,
                Err(StoreError::Redis(e)) => {
                    self.report_store_error("read execution", &StoreError::Redis(e));
                    backoff.wait().await;
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
        let run = StepJob { job, token, exec: &exec, step: &step.name, context: exec.context(index) };
        let outcome = match &step.kind {
            StepKind::Gate(gate) => self.execute_gate(gate, &run, cancel).await,
            StepKind::Sleep { .. } => woke(job, self.engine.now()),
            kind => self.execute_kind(kind, &run, cancel).await,
        };
        (outcome, Some(exec))
    }

    /// Runs a step of `kind`, or a gate's helper of that kind.
    async fn execute_kind(&self, kind: &StepKind, run: &StepJob<'_>, cancel: CancellationToken) -> Outcome {
        match kind {
            StepKind::Noop { output } => Outcome::Completed(output.clone().unwrap_or(Value::Null)),
            StepKind::Command { run: argv, env, cwd } => match self.command_spec(argv, env, cwd.as_deref(), run) {
                Ok(spec) => run_command(spec, cancel).await,
                Err(message) => run.invalid(&message),
            },
            StepKind::Http { url, headers, result_timeout_ms } => {
                match render_http(url, headers, &run.context) {
                    Ok((url, headers)) => {
                        let spec = PostSpec::for_step(url, headers, run.context.clone(), run.job, run.token, *result_timeout_ms);
                        self.http.post(&spec, &cancel, &|| self.engine.now()).await
                    }
                    Err(message) => run.invalid(&message),
                }
            }
            StepKind::External { .. } => {
                run.invalid("`external` jobs are run by external workers over the API, never by a sluice worker")
            }
            other => run.invalid(&format!("this worker has no executor for step kind `{}`", other.name())),
        }
    }

    /// Runs a job of a gate step: the probe, or the helper (see [`gate::gate_job`]).
    async fn execute_gate(&self, gate: &GateDef, run: &StepJob<'_>, cancel: CancellationToken) -> Outcome {
        match gate::gate_job(run.job) {
            Err(message) => run.invalid(&message),
            Ok(GateJob::Helper) => match &gate.helper {
                Some(helper) => self.execute_kind(&helper.kind, run, cancel).await,
                None => run.invalid("a helper job of a gate that has no helper"),
            },
            Ok(GateJob::Probe) => match &gate.probe {
                Probe::Command { run: argv, env, cwd } => match self.command_spec(argv, env, cwd.as_deref(), run) {
                    Ok(spec) => gate::run_command_probe(spec, cancel).await,
                    Err(message) => run.invalid(&message),
                },
                Probe::Http { url, headers } => match render_http(url, headers, &run.context) {
                    Ok((url, headers)) => {
                        let probe = HttpProbe::for_job(url, headers, run.job);
                        gate::run_http_probe(&self.http, &probe, &cancel).await
                    }
                    Err(message) => run.invalid(&message),
                },
            },
        }
    }

    /// The spec of a command step, command probe or command helper: rendered, with the
    /// step's context file and `SLUICE_*` variables.
    fn command_spec(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        run: &StepJob<'_>,
    ) -> Result<CommandSpec, String> {
        let (argv, env, cwd) = render_command(argv, env, cwd, &run.context)?;
        let mut spec = CommandSpec::new(argv);
        spec.env = env;
        spec.cwd = cwd.map(PathBuf::from);
        spec.timeout = run.job.timeout_ms.map(Duration::from_millis);
        spec.context = run.context.clone();
        spec.kill_grace = self.config.kill_grace;
        spec.sluice_env = vec![
            ("SLUICE_EXECUTION_ID".into(), run.exec.id.clone()),
            ("SLUICE_STEP".into(), run.step.to_string()),
            ("SLUICE_ATTEMPT".into(), run.job.attempts.to_string()),
            ("SLUICE_RUN".into(), run.exec.run.to_string()),
            ("SLUICE_JOB_ID".into(), run.job.id.clone()),
        ];
        Ok(spec)
    }

    async fn execute_standalone(&self, job: &Job, token: &str, cancel: CancellationToken) -> Outcome {
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
            http::KIND => match http::standalone_spec(job, token) {
                Ok(spec) => self.http.post(&spec, &cancel, &|| self.engine.now()).await,
                Err(message) => Outcome::Failed(JobError::terminal(message)),
            },
            other => Outcome::Failed(JobError::terminal(format!(
                "this worker has no executor for job kind `{other}`"
            ))),
        }
    }
}

/// A step job being run: what every executor of a step needs.
struct StepJob<'a> {
    job: &'a Job,
    /// The attempt's lease token.
    token: &'a str,
    exec: &'a Execution,
    /// The step's name.
    step: &'a str,
    /// The step's context (execution input and earlier outputs).
    context: Value,
}

impl StepJob<'_> {
    /// A failure another attempt cannot fix, naming the step.
    fn invalid(&self, message: &str) -> Outcome {
        Outcome::Failed(JobError::terminal(format!("step `{}`: {message}", self.step)))
    }
}

/// The outcome of a `sleep` step's job. The engine enqueues it due at the wake time, so the
/// timer is the job's due time and the job completes as soon as it is leased; a job leased
/// early (which the engine's plan does not do) completes all the same.
fn woke(job: &Job, now: Millis) -> Outcome {
    let until = job.payload.get("until").cloned().unwrap_or(Value::Null);
    Outcome::Completed(json!({ "slept_until": until, "woke_at": now }))
}

async fn run_command(spec: CommandSpec, cancel: CancellationToken) -> Outcome {
    match command::run(spec, cancel).await {
        Ok(result) => command::outcome(&result),
        Err(e) => Outcome::Failed(e.into_job_error()),
    }
}

type Rendered = (Vec<String>, BTreeMap<String, String>, Option<String>);

/// Substitutes `{{ … }}` placeholders in `run`, `env` values and `cwd`.
fn render_command(
    run: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    context: &Value,
) -> Result<Rendered, String> {
    let argv = run.iter().map(|a| template::render(a, context)).collect::<Result<Vec<_>, _>>()?;
    let env = render_values(env, context)?;
    let cwd = cwd.map(|c| template::render(c, context)).transpose()?;
    Ok((argv, env, cwd))
}

/// Substitutes placeholders in an HTTP `url` and header values.
fn render_http(
    url: &str,
    headers: &BTreeMap<String, String>,
    context: &Value,
) -> Result<(String, BTreeMap<String, String>), String> {
    Ok((template::render(url, context)?, render_values(headers, context)?))
}

fn render_values(map: &BTreeMap<String, String>, context: &Value) -> Result<BTreeMap<String, String>, String> {
    map.iter().map(|(k, v)| template::render(v, context).map(|v| (k.clone(), v))).collect()
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
                match rt.engine.settle(&job, &token, &outcome, None, 0).await {
                    Ok(Settled::Applied(settlement)) => {
                        let now = rt.engine.now();
                        let ran = sluice_store::metrics::elapsed(job.started_at.unwrap_or(now), now);
                        rt.record_settled(&job, &outcome, &settlement, false, ran);
                    }
                    Ok(Settled::LeaseLost) => {}
                    Err(e) => tracing::error!(job.id = %job.id, error = %e, "cannot settle an abandoned job"),
                }
                rt.inflight.remove(&job.id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_job_reports_when_it_was_due_and_when_it_woke() {
        let mut job = crate::test_job("sleep", json!({"until": 5_000}));
        assert_eq!(woke(&job, 5_020), Outcome::Completed(json!({"slept_until": 5_000, "woke_at": 5_020})));
        job.payload = Value::Null;
        assert_eq!(woke(&job, 7), Outcome::Completed(json!({"slept_until": null, "woke_at": 7})));
    }

    #[test]
    fn http_placeholders_render_in_url_and_header_values() {
        let context = json!({"input": {"env": "prod"}, "steps": {"build": {"output": {"sha": "abc"}}}});
        let headers = BTreeMap::from([("X-Sha".to_string(), "{{ steps.build.output.sha }}".to_string())]);
        let (url, headers) = render_http("http://deployer/{{ input.env }}", &headers, &context).unwrap();
        assert_eq!(url, "http://deployer/prod");
        assert_eq!(headers["X-Sha"], "abc");
        let err = render_http("http://deployer/{{ input.nope }}", &BTreeMap::new(), &context).unwrap_err();
        assert!(err.contains("input.nope"), "{err}");
    }
}
