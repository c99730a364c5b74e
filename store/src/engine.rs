//! The engine loop: read → plan (pure, in `sluice-core`) → commit (one script), recomputed
//! on fresh state when the execution's revision moved in between.
//!
//! Used by workers (a step's attempt settled), the scheduler (a lease expired) and the API
//! (a pending job cancelled, an operator action on an execution, a job leased by an external
//! worker, a result posted back). A lost revision race is never an error: the loop re-reads
//! and plans again; only a lost lease stops it (someone else holds the job now).
//!
//! **Posted results.** A result posted over the API carries an `Idempotency-Key` and is
//! settled like any attempt, fenced by the lease token; the key and the answer given are
//! recorded in the same atomic write ([`ResultRecord`]). A repeat with the same key gets the
//! recorded answer back, however the job moved since; another key for an attempt that a
//! posted result already settled is refused; a token that no longer holds the lease changes
//! nothing. A post without a token is for the job's current attempt: it applies while the
//! job runs (under whichever lease it runs), and is refused otherwise.
//!
//! **Metrics.** The engine records what it decides for jobs no worker of this process
//! runs: attempts settled by a posted result or by a reclaim, expired leases reclaimed,
//! pending jobs cancelled, and jobs started by external workers' leases (see
//! [`sluice_metrics::Metrics`]).

use std::sync::Arc;
use std::time::Duration;

use sluice_core::approval::{self, Vote, VoteRefusal, Voter};
use serde_json::{Value, json};
use sluice_core::control::{self, Action, Decision, Operator, Refusal};
use sluice_core::execution::{self, Plan};
use sluice_core::ids;
use sluice_core::job::{self, Job, JobError, JobStatus, Outcome, Settlement};
use sluice_core::{Clock, Execution, Millis};

use crate::{CancelOutcome, Lane, Leased, Metrics, OperateOutcome, ResultRecord, SettleOutcome, Store, StoreError};

/// Lost revision races tolerated in a row before giving up with [`StoreError::Contended`].
const MAX_RACES: usize = 16;

/// Most due delayed jobs one external lease call promotes per shard.
const EXTERNAL_PROMOTE_LIMIT: usize = 100;

/// The store plus a clock: everything needed to carry out engine decisions.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
}

/// What a settle did.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Applied with this settlement.
    Applied(Settlement),
    /// The lease was lost: someone else holds or settled the job; nothing changed.
    LeaseLost,
}

/// A result posted for a job over the API (`POST /v1/jobs/{id}/result`).
#[derive(Debug, Clone, PartialEq)]
pub struct PostedResult {
    /// The post's `Idempotency-Key`.
    pub idempotency_key: String,
    /// The lease token it was posted under; `None`: the job's current attempt, while it runs.
    pub token: Option<String>,
    /// What the attempt did (`Completed` or `Failed`).
    pub outcome: Outcome,
}

/// What posting a result did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultPosted {
    /// Applied now; the answer recorded with it.
    Applied(Value),
    /// A result with the same `Idempotency-Key` was applied before; its answer. Nothing
    /// changed.
    Replayed(Value),
    /// The attempt was already settled by a result with another `Idempotency-Key`; nothing
    /// changed.
    AlreadyApplied,
    /// The token does not hold the job's lease (expired, reclaimed, leased again), or no
    /// attempt runs; nothing changed.
    LeaseLost,
    /// No such job.
    NotFound,
}

/// One attempt to settle: the job as read (`attempts` counting this attempt), the lease
/// token it runs under, and what it did.
struct Attempt<'a> {
    job: &'a Job,
    token: &'a str,
    outcome: &'a Outcome,
}

/// What one settle loop committed.
enum Committed {
    Applied(Settlement, Option<Value>),
    LeaseLost,
    Replayed(String),
    AlreadyApplied,
}

/// The answer to a posted result that settled `job`'s attempt with `settlement`.
fn result_answer(job: &Job, settlement: &Settlement) -> Value {
    let outcome = match settlement {
        Settlement::Completed { .. } => "completed",
        _ => "failed",
    };
    let mut answer = json!({
        "job_id": job.id,
        "attempt": job.attempts,
        "outcome": outcome,
        "job_status": settlement.status().as_str(),
    });
    if let Settlement::Retry { at, .. } = settlement {
        answer["next_attempt_at"] = json!(at);
    }
    answer
}

/// A recorded answer, read back.
fn recorded(answer: &str) -> Result<Value, StoreError> {
    serde_json::from_str(answer).map_err(|e| StoreError::Corrupt { key: "job results".into(), reason: format!("an answer is not JSON: {e}") })
}

/// What a job cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The job is cancelled (and its execution, if any, failed with kind `cancelled`).
    Cancelled(Box<Job>),
    /// No such job.
    NotFound,
    /// The job is not pending.
    NotPending(JobStatus),
}

/// What an operator action or an approval vote did; `R` is why it may be refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Acted<R = Refusal> {
    /// Committed; the execution as it is now.
    Applied(Box<Execution>),
    /// Nothing to do (cancel of a terminal execution); the execution as it is.
    Unchanged(Box<Execution>),
    /// Not allowed in the execution's state (or not by this caller).
    Refused(R),
    /// A retry or restart needs the target, which another execution holds.
    TargetBusy {
        /// The target.
        target: String,
        /// The live execution holding it.
        holder: String,
    },
    /// No such execution.
    NotFound,
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

impl Engine {
    /// An engine over `store` reading time from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current time.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The metrics of the process (the store's).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.store.metrics()
    }

    /// How long `job`'s current attempt has run at `now`.
    fn ran(job: &Job, now: Millis) -> Duration {
        crate::metrics::elapsed(job.started_at.unwrap_or(now), now)
    }

    /// The next job id in `shard`.
    fn job_id(shard: u32) -> String {
        ids::new_id(ids::JOB, shard)
    }

    /// Settles the attempt of `job` (held under `token`) with `outcome`, and advances its
    /// execution. `known` may carry the execution as read before the attempt; it is used
    /// optimistically and re-read if it turns out to be stale. `job.attempts` must count
    /// the attempt being settled.
    ///
    /// # Errors
    /// Redis errors, unreadable records, or [`StoreError::Contended`].
    pub async fn settle(
        &self,
        job: &Job,
        token: &str,
        outcome: &Outcome,
        known: Option<Execution>,
        expired_before: Millis,
    ) -> Result<Settled, StoreError> {
        Ok(match self.commit(Attempt { job, token, outcome }, known, expired_before, None).await? {
            Committed::Applied(settlement, _) => Settled::Applied(settlement),
            // Without a record, the script answers neither replay nor already-applied.
            Committed::LeaseLost | Committed::Replayed(_) | Committed::AlreadyApplied => Settled::LeaseLost,
        })
    }

    /// The settle loop: plan on the execution as known (re-read after a lost race) and
    /// commit; with `key`, as a result posted with that `Idempotency-Key`.
    async fn commit(
        &self,
        attempt: Attempt<'_>,
        mut known: Option<Execution>,
        expired_before: Millis,
        key: Option<&str>,
    ) -> Result<Committed, StoreError> {
        let Attempt { job, token, outcome } = attempt;
        for _ in 0..MAX_RACES {
            let now = self.now();
            let mut settlement = job::decide(job, outcome, now, jitter());
            let (plan, base) = match &job.execution_id {
                None => (Plan { events: execution::settlement_events(job, &settlement), ..Plan::default() }, None),
                Some(exec_id) => {
                    let exec = match known.take() {
                        Some(e) => Some(e),
                        None => self.store.get_execution(exec_id).await?,
                    };
                    match exec {
                        None => {
                            settlement = no_retry(settlement, "its execution no longer exists");
                            (Plan { events: execution::settlement_events(job, &settlement), ..Plan::default() }, None)
                        }
                        Some(exec) => {
                            if !exec.owns(job) {
                                settlement = no_retry(settlement, "its execution is no longer running this step");
                            }
                            let shard = ids::shard_of(&exec.id, ids::EXECUTION)?;
                            let plan = execution::plan_settle(&exec, job, &settlement, now, &mut || Self::job_id(shard));
                            (plan, Some(exec))
                        }
                    }
                }
            };
            let answer = key.map(|_| result_answer(job, &settlement));
            let record = key.zip(answer.as_ref()).map(|(key, answer)| ResultRecord { key: key.to_string(), answer: answer.to_string() });
            match self.store.settle(job, token, &settlement, &plan, base.as_ref(), expired_before, record.as_ref(), now).await? {
                SettleOutcome::Applied => return Ok(Committed::Applied(settlement, answer)),
                SettleOutcome::LeaseLost => return Ok(Committed::LeaseLost),
                SettleOutcome::Replayed(answer) => return Ok(Committed::Replayed(answer)),
                SettleOutcome::AlreadyApplied => return Ok(Committed::AlreadyApplied),
                SettleOutcome::Conflict(_) => continue,
            }
        }
        Err(StoreError::Contended(job.execution_id.clone().unwrap_or_default()))
    }

    /// Applies a result posted for job `id` over the API, exactly once per attempt (see the
    /// module docs): settles the attempt fenced by the token, advances the job's execution,
    /// and records the post's `Idempotency-Key` with its answer, all in one write.
    ///
    /// # Errors
    /// Redis errors, a malformed id, unreadable records, or [`StoreError::Contended`].
    pub async fn post_result(&self, id: &str, posted: &PostedResult) -> Result<ResultPosted, StoreError> {
        let Some(job) = self.store.get_job(id).await? else { return Ok(ResultPosted::NotFound) };
        let key = posted.idempotency_key.as_str();
        let seen = self.store.posted_results(id, key, posted.token.as_deref(), job.attempts).await?;
        if let Some(answer) = seen.answer {
            return Ok(ResultPosted::Replayed(recorded(&answer)?));
        }
        let running = job.lease.as_ref().filter(|_| job.status == JobStatus::Running).map(|l| l.token.as_str());
        let token = match (posted.token.as_deref(), running) {
            (Some(_), _) if seen.token_settled => return Ok(ResultPosted::AlreadyApplied),
            (Some(given), _) => given,
            (None, Some(current)) => current,
            (None, None) if seen.attempt_settled => return Ok(ResultPosted::AlreadyApplied),
            (None, None) => return Ok(ResultPosted::LeaseLost),
        };
        if running != Some(token) {
            return Ok(ResultPosted::LeaseLost);
        }
        let attempt = Attempt { job: &job, token, outcome: &posted.outcome };
        Ok(match self.commit(attempt, None, 0, Some(key)).await? {
            Committed::Applied(settlement, answer) => {
                self.metrics().attempt_settled(&job, &settlement, Self::ran(&job, self.now()));
                tracing::info!(job.id = %id, status = settlement.status().as_str(), "posted result applied");
                ResultPosted::Applied(answer.unwrap_or(Value::Null))
            }
            Committed::LeaseLost => ResultPosted::LeaseLost,
            Committed::Replayed(answer) => ResultPosted::Replayed(recorded(&answer)?),
            Committed::AlreadyApplied => ResultPosted::AlreadyApplied,
        })
    }

    /// Leases and starts up to `max` jobs of `queue`'s external lane (jobs of kinds sluice's
    /// workers do not run) for the external worker `worker`, from every shard, each held
    /// until `lease_ttl_ms` from now unless heartbeated. Returns at once; a step job's
    /// payload gets the step context (`context`: the execution input and the outputs of
    /// earlier steps, see [`Execution::context`]) when it does not carry one.
    ///
    /// # Errors
    /// Redis errors; unreadable records.
    pub async fn lease_external(&self, queue: &str, worker: &str, max: usize, lease_ttl_ms: Millis) -> Result<Leased, StoreError> {
        let shards = self.store.shards();
        let first = rand::random::<u32>() % shards.max(1);
        let mut out = Leased::default();
        for i in 0..shards {
            let want = max.saturating_sub(out.jobs.len());
            if want == 0 {
                break;
            }
            let now = self.now();
            let shard = (first + i) % shards;
            let leased = self
                .store
                .lease(shard, queue, Lane::External, worker, want, now.saturating_add(lease_ttl_ms), now, EXTERNAL_PROMOTE_LIMIT)
                .await?;
            out.next_due = match (out.next_due, leased.next_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.jobs.extend(leased.jobs);
        }
        let now = self.now();
        for job in &mut out.jobs {
            self.metrics().job_started(job, job.started_at.unwrap_or(now));
            self.add_context(job).await?;
        }
        Ok(out)
    }

    /// Puts the step context into a step job's payload (an object), unless it has one.
    async fn add_context(&self, job: &mut Job) -> Result<(), StoreError> {
        let (Some(exec_id), Some(step)) = (&job.execution_id, job.step) else { return Ok(()) };
        if job.payload.is_null() {
            job.payload = json!({});
        }
        let Some(payload) = job.payload.as_object_mut() else { return Ok(()) };
        if payload.contains_key("context") {
            return Ok(());
        }
        if let Some(exec) = self.store.get_execution(exec_id).await? {
            payload.insert("context".into(), exec.context(usize::try_from(step).unwrap_or(usize::MAX)));
        }
        Ok(())
    }

    /// Cancels the pending job `id` (`jobs.cancel`); a step job's execution fails with kind
    /// `cancelled` in the same atomic write.
    ///
    /// # Errors
    /// Redis errors, a malformed id, unreadable records, or [`StoreError::Contended`].
    pub async fn cancel_job(&self, id: &str) -> Result<Cancelled, StoreError> {
        for _ in 0..MAX_RACES {
            let Some(job) = self.store.get_job(id).await? else { return Ok(Cancelled::NotFound) };
            if job.status != JobStatus::Pending {
                return Ok(Cancelled::NotPending(job.status));
            }
            let now = self.now();
            let (plan, base) = match &job.execution_id {
                Some(exec_id) => match self.store.get_execution(exec_id).await? {
                    Some(exec) => (execution::plan_job_cancelled(&exec, &job, now), Some(exec)),
                    None => (Plan { events: execution::job_cancelled_events(&job), ..Plan::default() }, None),
                },
                None => (Plan { events: execution::job_cancelled_events(&job), ..Plan::default() }, None),
            };
            match self.store.cancel(&job, &plan, base.as_ref(), now).await? {
                CancelOutcome::Cancelled => {
                    self.metrics().pending_job_cancelled(&job);
                    let mut job = job;
                    job.status = JobStatus::Cancelled;
                    job.lease = None;
                    job.finished_at = Some(now);
                    return Ok(Cancelled::Cancelled(Box::new(job)));
                }
                CancelOutcome::NotFound => return Ok(Cancelled::NotFound),
                CancelOutcome::NotPending(status) => return Ok(Cancelled::NotPending(status)),
                CancelOutcome::Conflict(_) => continue,
            }
        }
        Err(StoreError::Contended(id.to_string()))
    }

    /// Carries out an operator action on execution `id` (cancel, retry, restart, pause,
    /// resume; see `sluice_core::control`), re-planning on fresh state when the execution
    /// moved meanwhile.
    ///
    /// # Errors
    /// Redis errors, a malformed id, unreadable records, or [`StoreError::Contended`].
    pub async fn act(&self, id: &str, action: Action, operator: &Operator) -> Result<Acted, StoreError> {
        self.operate(id, |exec, now, ids| control::plan_action(exec, action, operator, now, ids)).await
    }

    /// Casts an approval vote on step `index` of execution `id` (see
    /// `sluice_core::approval`), re-planning on fresh state when the execution moved
    /// meanwhile.
    ///
    /// # Errors
    /// Redis errors, a malformed id, unreadable records, or [`StoreError::Contended`].
    pub async fn vote(&self, id: &str, index: usize, vote: &Vote, voter: &Voter) -> Result<Acted<VoteRefusal>, StoreError> {
        self.operate(id, |exec, now, ids| approval::plan_vote(exec, index, vote, voter, now, ids)).await
    }

    /// Reads execution `id`, plans with `planner` and commits under its revision, again on
    /// fresh state while the revision moved in between.
    async fn operate<R>(
        &self,
        id: &str,
        planner: impl Fn(&Execution, Millis, &mut dyn FnMut() -> String) -> Result<Decision, R>,
    ) -> Result<Acted<R>, StoreError> {
        for _ in 0..MAX_RACES {
            let Some(exec) = self.store.get_execution(id).await? else { return Ok(Acted::NotFound) };
            let now = self.now();
            let shard = ids::shard_of(&exec.id, ids::EXECUTION)?;
            let plan = match planner(&exec, now, &mut || Self::job_id(shard)) {
                Err(refusal) => return Ok(Acted::Refused(refusal)),
                Ok(Decision::Unchanged) => return Ok(Acted::Unchanged(Box::new(exec))),
                Ok(Decision::Apply(plan)) => *plan,
            };
            match self.store.operate(&exec, &plan, now).await? {
                OperateOutcome::Applied => {
                    let mut next = plan.execution.unwrap_or(exec);
                    next.rev += 1;
                    return Ok(Acted::Applied(Box::new(next)));
                }
                OperateOutcome::Busy(holder) => {
                    return Ok(Acted::TargetBusy { target: exec.target.unwrap_or_default(), holder });
                }
                OperateOutcome::Conflict(_) => {}
            }
        }
        Err(StoreError::Contended(id.to_string()))
    }

    /// Reclaims expired leases of `shard` (at most `chunk`): reservations return to their
    /// queues; each expired running job is settled as a failed, retryable attempt (retried
    /// after its backoff, or failed for good once its attempts are spent). Safe to run from
    /// any number of processes. Returns `(reservations released, attempts failed)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn reclaim(&self, shard: u32, chunk: usize) -> Result<(usize, usize), StoreError> {
        let now = self.now();
        let (released, running) = self.store.reclaim(shard, now, chunk).await?;
        let mut failed = 0;
        for (id, token) in running {
            let Some(job) = self.store.get_job(&id).await? else { continue };
            let awaiting = job.lease.as_ref().is_some_and(|l| l.worker == crate::jobs::AWAITING_RESULT);
            let outcome = Outcome::Failed(JobError::retryable(if awaiting {
                "timed out: no result was posted back before the deadline"
            } else {
                "lease expired: the worker holding the job stopped heartbeating"
            }));
            match self.settle(&job, &token, &outcome, None, now).await {
                Ok(Settled::Applied(settlement)) => {
                    failed += 1;
                    self.metrics().attempt_settled(&job, &settlement, Self::ran(&job, now));
                    tracing::info!(job.id = %id, queue = %job.queue, attempt = job.attempts, "reclaimed an expired lease as a failed attempt");
                }
                Ok(Settled::LeaseLost) => {}
                Err(e) => tracing::warn!(job.id = %id, error = %e, "cannot reclaim an expired lease"),
            }
        }
        self.metrics().leases_reclaimed(released + failed);
        Ok((released, failed))
    }
}

/// A retry of a job whose execution moved on would run work nobody waits for: fail it.
fn no_retry(settlement: Settlement, why: &str) -> Settlement {
    match settlement {
        Settlement::Retry { mut error, .. } => {
            error.message = format!("{} (not retried: {why})", error.message);
            error.retryable = false;
            Settlement::Failed { error }
        }
        other => other,
    }
}
