//! Typed wrappers of the job scripts: enqueue, lease (sluice's workers: reserve, then start),
//! external lease (lease and start in one step), heartbeat, settle (with the record of a
//! result posted over the API), cancel, release, promote and reclaim.

use std::collections::BTreeMap;

use redis::Value as RValue;
use serde_json::{Value, json};
use sluice_core::execution::Plan;
use sluice_core::ids;
use sluice_core::job::{Job, JobStatus, NewJob, Settlement};
use sluice_core::{Execution, Millis, event::Event};

use crate::keys::{EXECUTION_EVENTS_SUFFIX, EXTERNAL_SEGMENT, Lane};
use crate::plan::{self, KeyList};
use crate::{Store, StoreError, codec, contract};

/// The lease holder of a job whose result will be posted back (an `http` step that
/// answered 202): the job stays running under its token until its deadline.
pub const AWAITING_RESULT: &str = "awaiting-result";

/// Jobs per script call when enqueueing in bulk (bounds the time one script holds Redis).
const ENQUEUE_CHUNK: usize = 500;

/// What happened to one job given to [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job with this id was created.
    Created(String),
    /// A pending job with the same dedupe key already existed; this is its id.
    Existing(String),
}

impl EnqueueOutcome {
    /// The id of the job that represents the request.
    pub fn id(&self) -> &str {
        match self {
            EnqueueOutcome::Created(id) | EnqueueOutcome::Existing(id) => id,
        }
    }
}

/// Jobs taken by one [`Store::lease`] call.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The jobs, each with its lease: reserved (status `pending`) from the builtin lane,
    /// started (status `running`) from the external lane.
    pub jobs: Vec<Job>,
    /// When the lane's earliest delayed job is due, if it has one.
    pub next_due: Option<Millis>,
}

/// A lease as a heartbeat found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still held, now extended.
    Held,
    /// Held and extended, but the job's execution was stopped: kill the job and settle it.
    CancelRequested,
    /// Lost: the token changed or the job settled; stop the work, its result is refused.
    Lost,
}

/// Answer of [`Store::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// The job is running; this is its attempt number.
    Started {
        /// 1-based attempt number.
        attempt: u32,
    },
    /// The job was cancelled while it sat in the prefetch buffer; do not run it.
    Cancelled,
    /// The reservation was lost (expired and taken by someone else); do not run it.
    LeaseLost,
    /// No such job.
    NotFound,
}

/// Answer of a settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Applied.
    Applied,
    /// The caller no longer holds the job; nothing changed.
    LeaseLost,
    /// The execution moved to this revision since the plan was made; nothing changed.
    Conflict(u64),
    /// A result with the same `Idempotency-Key` was applied before; this is the answer
    /// recorded then (JSON text). Nothing changed.
    Replayed(String),
    /// The attempt this token leased was settled by a result with another
    /// `Idempotency-Key`; nothing changed.
    AlreadyApplied,
}

/// The record of a result posted over the API, written by the settle that applies it: its
/// `Idempotency-Key` and the answer given (replayed to any later post with the same key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    /// The `Idempotency-Key` of the post.
    pub key: String,
    /// The answer, as JSON text.
    pub answer: String,
}

/// What a job's results hash says about a post (see [`Store::posted_results`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostedResults {
    /// The answer recorded for the post's `Idempotency-Key` (JSON text), if it was applied.
    pub answer: Option<String>,
    /// Whether the post's lease token was settled by a posted result.
    pub token_settled: bool,
    /// Whether the asked attempt was settled by a posted result.
    pub attempt_settled: bool,
}

/// Answer of a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled.
    Cancelled,
    /// No such job.
    NotFound,
    /// The job is not pending (it is in this status).
    NotPending(JobStatus),
    /// The execution moved to this revision since the plan was made; nothing changed.
    Conflict(u64),
}

fn status_reply(script: &'static str, reply: &[RValue]) -> Result<String, StoreError> {
    match reply.first() {
        Some(RValue::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(RValue::SimpleString(s)) => Ok(s.clone()),
        other => Err(contract(script, other)),
    }
}

fn int_at(reply: &[RValue], i: usize) -> Option<i64> {
    match reply.get(i) {
        Some(RValue::Int(n)) => Some(*n),
        Some(RValue::BulkString(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// The events of a newly created standalone job.
fn enqueued_event(job: &NewJob) -> Event {
    Event::new(
        sluice_core::event::names::JOB_ENQUEUED,
        json!({ "job_id": job.id, "queue": job.queue, "kind": job.kind, "priority": job.priority }),
    )
}

impl Store {
    fn shard_of_job(&self, id: &str) -> Result<u32, StoreError> {
        let shard = ids::shard_of(id, ids::JOB)?;
        if shard >= self.shards() {
            return Err(ids::BadId { id: id.to_string(), expected: ids::JOB }.into());
        }
        Ok(shard)
    }

    /// The KEYS of the scripts that write one job (`settle`, `cancel`, `release`): the
    /// shard-wide three, the job, the leased set, then the ready and delayed sets of the
    /// job's lane.
    fn job_keys(&self, shard: u32, id: &str, queue: &str, lane: Lane) -> KeyList {
        let mut keys = KeyList::for_shard(&self.keys, shard);
        keys.add(self.keys.job(shard, id));
        keys.add(self.keys.leased(shard));
        keys.add(self.keys.ready(shard, queue, lane));
        keys.add(self.keys.delayed(shard, queue, lane));
        keys
    }

    /// Fixed leading ARGV of plan-carrying scripts: now, event cap, channel prefix.
    fn common_args(&self, now: Millis) -> [String; 3] {
        [now.to_string(), self.config.event_cap.to_string(), self.keys.notify_prefix()]
    }

    /// An invocation of `script` in `shard` with the conventions of `lua/lib.lua` in place:
    /// KEYS 1-3 (events, seq, queues) and ARGV 1-3 (now, event cap, channel prefix).
    fn in_shard<'a>(&self, script: &'a redis::Script, shard: u32, now: Millis) -> redis::ScriptInvocation<'a> {
        self.with_keys(script, KeyList::for_shard(&self.keys, shard), now)
    }

    /// An invocation of `script` with `keys` (which start with the shard-wide three) and
    /// ARGV 1-3 (now, event cap, channel prefix).
    pub(crate) fn with_keys<'a>(&self, script: &'a redis::Script, keys: KeyList, now: Millis) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in keys.into_vec() {
            inv.key(k);
        }
        inv.arg(&self.common_args(now)[..]);
        inv
    }

    /// Creates standalone jobs (each id carries its shard). A job with a dedupe key that a
    /// pending job of its queue already holds is not created; that job is returned instead.
    ///
    /// # Errors
    /// Redis errors; malformed ids.
    pub async fn enqueue(&self, jobs: &[NewJob], now: Millis) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut by_shard: BTreeMap<u32, Vec<(usize, &NewJob)>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            by_shard.entry(self.shard_of_job(&job.id)?).or_default().push((i, job));
        }
        let mut out = vec![EnqueueOutcome::Created(String::new()); jobs.len()];
        let mut conn = self.conn.clone();
        for (shard, group) in by_shard {
            for chunk in group.chunks(ENQUEUE_CHUNK) {
                let mut keys = KeyList::for_shard(&self.keys, shard);
                let entries: Vec<Value> = chunk
                    .iter()
                    .map(|(_, j)| plan::job_entry(&self.keys, &mut keys, shard, j, now))
                    .collect();
                let events: Vec<Value> = chunk
                    .iter()
                    .map(|(_, j)| {
                        let e = enqueued_event(j);
                        json!([e.kind, e.data.to_string()])
                    })
                    .collect();
                let plan = json!({ "jobs": entries, "events": events });
                let mut inv = self.with_keys(&self.scripts.enqueue, keys, now);
                inv.arg(plan.to_string());
                let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
                for ((index, job), pair) in chunk.iter().zip(reply.chunks(2)) {
                    let id = match pair.first() {
                        Some(RValue::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                        other => return Err(contract("enqueue", other)),
                    };
                    out[*index] = if int_at(pair, 1) == Some(1) {
                        self.metrics().job_enqueued(&job.queue, &job.kind);
                        EnqueueOutcome::Created(id)
                    } else {
                        EnqueueOutcome::Existing(id)
                    };
                }
            }
        }
        Ok(out)
    }

    /// Reads a job.
    ///
    /// # Errors
    /// Redis errors; a malformed id or record.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let shard = self.shard_of_job(id)?;
        let key = self.keys.job(shard, id);
        let mut conn = self.conn.clone();
        let map: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        if map.is_empty() {
            return Ok(None);
        }
        codec::job_from_hash(&key, &map).map(Some)
    }

    /// Promotes due delayed jobs of `queue`'s `lane` in `shard` (at most `promote_limit`),
    /// then takes up to `max` of its ready jobs for `worker` until `deadline`:
    ///
    /// - from the builtin lane (sluice's workers) each is *reserved*: it stays `pending`
    ///   with a lease token, and runs once [`Store::start`] accepts that token;
    /// - from the external lane (external workers over the API) each is leased and started
    ///   in one step: it comes back `running`, with its token and its attempt counted.
    ///
    /// Either way only jobs of `lane` are handed out.
    ///
    /// # Errors
    /// Redis errors; an unreadable job record.
    #[allow(clippy::too_many_arguments)]
    pub async fn lease(
        &self,
        shard: u32,
        queue: &str,
        lane: Lane,
        worker: &str,
        max: usize,
        deadline: Millis,
        now: Millis,
        promote_limit: usize,
    ) -> Result<Leased, StoreError> {
        let (script, name) = match lane {
            Lane::Builtin => (&self.scripts.lease, "lease"),
            Lane::External => (&self.scripts.lease_external, "lease_external"),
        };
        let mut inv = self.in_shard(script, shard, now);
        inv.key(self.keys.ready(shard, queue, lane))
            .key(self.keys.delayed(shard, queue, lane))
            .key(self.keys.leased(shard))
            .arg(max)
            .arg(deadline)
            .arg(worker)
            .arg(ulid::Ulid::generate().to_string())
            .arg(self.keys.job_prefix(shard))
            .arg(promote_limit.max(1));
        if lane == Lane::External {
            inv.arg(self.keys.execution_prefix(shard)).arg(EXECUTION_EVENTS_SUFFIX);
        }
        let reply: Vec<RValue> = inv.invoke_async(&mut self.conn.clone()).await?;
        self.leased_from_reply(name, shard, &reply)
    }

    /// Reads the reply of a lease script: the next due time, then `(id, fields)` per job.
    fn leased_from_reply(&self, script: &'static str, shard: u32, reply: &[RValue]) -> Result<Leased, StoreError> {
        let next_due = int_at(reply, 0).filter(|d| *d >= 0);
        let mut jobs = Vec::new();
        for pair in reply[1.min(reply.len())..].chunks(2) {
            let (Some(RValue::BulkString(id)), Some(fields)) = (pair.first(), pair.get(1)) else {
                return Err(contract(script, pair));
            };
            let flat: Vec<String> = redis::from_redis_value(fields.clone())?;
            let key = self.keys.job(shard, &String::from_utf8_lossy(id));
            jobs.push(codec::job_from_hash(&key, &codec::pairs_to_map(flat))?);
        }
        Ok(Leased { jobs, next_due })
    }

    /// Starts the reserved `job` (as leased) under its lease token, extending the lease to
    /// `deadline`.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn start(&self, job: &Job, token: &str, deadline: Millis, now: Millis) -> Result<StartOutcome, StoreError> {
        let shard = self.shard_of_job(&job.id)?;
        let mut keys = KeyList::for_shard(&self.keys, shard);
        keys.add(self.keys.job(shard, &job.id));
        keys.add(self.keys.leased(shard));
        if let Some(exec) = &job.execution_id {
            keys.add(self.keys.execution_events(shard, exec));
        }
        let mut args = self.common_args(now).to_vec();
        args.extend([token.to_string(), deadline.to_string()]);
        let reply = self.scripts.start.call(&self.conn, shard, keys.into_vec(), args).await?;
        Ok(match status_reply("start", &reply)?.as_str() {
            "ok" => StartOutcome::Started {
                attempt: u32::try_from(int_at(&reply, 1).unwrap_or(1)).unwrap_or(1),
            },
            "cancelled" => StartOutcome::Cancelled,
            "lease_lost" => StartOutcome::LeaseLost,
            "not_found" => StartOutcome::NotFound,
            _ => return Err(contract("start", reply)),
        })
    }

    /// Extends the leases of `(job id, token)` pairs to `deadline`. Returns, per pair,
    /// whether the lease is still held, and whether the job's execution was stopped.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn heartbeat(&self, leases: &[(String, String)], deadline: Millis) -> Result<Vec<LeaseState>, StoreError> {
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (id, _)) in leases.iter().enumerate() {
            by_shard.entry(self.shard_of_job(id)?).or_default().push(i);
        }
        let mut out = vec![LeaseState::Lost; leases.len()];
        let mut conn = self.conn.clone();
        for (shard, group) in by_shard {
            let mut inv = self.scripts.heartbeat.prepare_invoke();
            inv.key(self.keys.leased(shard)).arg(deadline);
            for &i in &group {
                inv.key(self.keys.job(shard, &leases[i].0)).arg(&leases[i].1);
            }
            let reply: Vec<i64> = inv.invoke_async(&mut conn).await?;
            for (&i, state) in group.iter().zip(reply) {
                out[i] = match state {
                    1 => LeaseState::Held,
                    2 => LeaseState::CancelRequested,
                    _ => LeaseState::Lost,
                };
            }
        }
        Ok(out)
    }

    /// Commits a running job's settlement together with `plan` (its execution's next state,
    /// next jobs, events), fenced by `token` and guarded by the revision of `base` (the execution
    /// the plan was made from). With `expired_before > 0` the lease must also have expired before
    /// that time (the reaper's guard). With a `record` (a result posted over the API), the
    /// post's `Idempotency-Key` and answer are recorded in the same write, and a key that
    /// was applied before, or a lease already settled by another posted result, changes
    /// nothing ([`SettleOutcome::Replayed`], [`SettleOutcome::AlreadyApplied`]).
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &self,
        job: &Job,
        token: &str,
        settlement: &Settlement,
        plan: &Plan,
        base: Option<&Execution>,
        expired_before: Millis,
        record: Option<&ResultRecord>,
        now: Millis,
    ) -> Result<SettleOutcome, StoreError> {
        let shard = self.shard_of_job(&job.id)?;
        let lane = Lane::of_kind(&job.kind);
        let mut keys = self.job_keys(shard, &job.id, &job.queue, lane);
        let record = record.map(|r| {
            let ttl_ms = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            json!({
                "key": keys.add(self.keys.job_results(shard, &job.id)),
                "name": r.key,
                "answer": r.answer,
                "ttl": ttl_ms,
            })
        });
        let tail = plan::tail(&self.keys, &mut keys, shard, plan, base, now);
        let now_s = now.to_string();
        let (fields, due) = match settlement {
            Settlement::Completed { output } => (
                json!({ "result": output.to_string(), "finished_at": now_s }),
                0,
            ),
            Settlement::Retry { error, at, .. } => (
                json!({
                    "last_error": serde_json::to_string(error).unwrap_or_default(),
                    "scheduled_at": at.to_string(),
                }),
                *at,
            ),
            Settlement::Failed { error } => (
                json!({
                    "last_error": serde_json::to_string(error).unwrap_or_default(),
                    "finished_at": now_s,
                }),
                0,
            ),
            Settlement::Deferred { deadline } => (json!({ "lease_worker": AWAITING_RESULT }), *deadline),
        };
        let mut body = json!({
            "status": settlement.status().as_str(),
            "fields": fields,
            "due": due,
            "stem": lane.stem(&job.queue),
            "tail": tail,
        });
        // Absent, not null: cjson decodes null to a value Lua treats as true.
        if let Some(record) = record {
            body["record"] = record;
        }
        let mut args = self.common_args(now).to_vec();
        args.extend([token.to_string(), expired_before.to_string(), body.to_string()]);
        let reply = self.scripts.settle.call(&self.conn, shard, keys.into_vec(), args).await?;
        Ok(match status_reply("settle", &reply)?.as_str() {
            "ok" => {
                self.metrics().jobs_enqueued(&plan.jobs);
                SettleOutcome::Applied
            }
            "lease_lost" => SettleOutcome::LeaseLost,
            "conflict" => SettleOutcome::Conflict(u64::try_from(int_at(&reply, 1).unwrap_or(0)).unwrap_or(0)),
            "replay" => match reply.get(1) {
                Some(RValue::BulkString(b)) => SettleOutcome::Replayed(String::from_utf8_lossy(b).into_owned()),
                _ => return Err(contract("settle", reply)),
            },
            "already_applied" => SettleOutcome::AlreadyApplied,
            _ => return Err(contract("settle", reply)),
        })
    }

    /// Cancels a pending job together with `plan` (guarded by the revision of `base`, the
    /// execution the plan was made from).
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn cancel(&self, job: &Job, plan: &Plan, base: Option<&Execution>, now: Millis) -> Result<CancelOutcome, StoreError> {
        let shard = self.shard_of_job(&job.id)?;
        let mut keys = self.job_keys(shard, &job.id, &job.queue, Lane::of_kind(&job.kind));
        let tail = plan::tail(&self.keys, &mut keys, shard, plan, base, now);
        let mut inv = self.with_keys(&self.scripts.cancel, keys, now);
        inv.arg(json!({ "tail": tail }).to_string());
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
        Ok(match status_reply("cancel", &reply)?.as_str() {
            "ok" => {
                self.metrics().jobs_enqueued(&plan.jobs);
                CancelOutcome::Cancelled
            }
            "not_found" => CancelOutcome::NotFound,
            "not_pending" => {
                let status = match reply.get(1) {
                    Some(RValue::BulkString(b)) => JobStatus::parse(&String::from_utf8_lossy(b)),
                    _ => None,
                };
                CancelOutcome::NotPending(status.ok_or_else(|| contract("cancel", &reply))?)
            }
            "conflict" => CancelOutcome::Conflict(u64::try_from(int_at(&reply, 1).unwrap_or(0)).unwrap_or(0)),
            _ => return Err(contract("cancel", reply)),
        })
    }

    /// Gives a held job back to its queue's `lane` unfinished (its started attempt is not
    /// counted). Returns false when the lease was already lost.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn release(&self, job_id: &str, queue: &str, lane: Lane, token: &str, now: Millis) -> Result<bool, StoreError> {
        let shard = self.shard_of_job(job_id)?;
        let mut conn = self.conn.clone();
        let keys = self.job_keys(shard, job_id, queue, lane);
        let reply: Vec<RValue> = self
            .with_keys(&self.scripts.release, keys, now)
            .arg(token)
            .arg(&*lane.stem(queue))
            .invoke_async(&mut conn)
            .await?;
        Ok(status_reply("release", &reply)? == "ok")
    }

    /// Moves up to `chunk` due delayed jobs of `queue`'s `lane` in `shard` to its ready set.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn promote(&self, shard: u32, queue: &str, lane: Lane, now: Millis, chunk: usize) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let moved: usize = self
            .in_shard(&self.scripts.promote, shard, now)
            .key(self.keys.ready(shard, queue, lane))
            .key(self.keys.delayed(shard, queue, lane))
            .arg(self.keys.job_prefix(shard))
            .arg(chunk.max(1))
            .arg(&*lane.stem(queue))
            .invoke_async(&mut conn)
            .await?;
        Ok(moved)
    }

    /// Handles up to `chunk` expired leases of `shard`: reservations go back to their
    /// queues here; expired running jobs are returned as `(id, token)` for the caller to
    /// settle as failed attempts. Returns `(released, running)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn reclaim(&self, shard: u32, now: Millis, chunk: usize) -> Result<(usize, Vec<(String, String)>), StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = self
            .in_shard(&self.scripts.reclaim, shard, now)
            .key(self.keys.leased(shard))
            .arg(self.keys.job_prefix(shard))
            .arg(chunk.max(1))
            .arg(self.keys.queue_prefix(shard))
            .arg(crate::keys::READY_SUFFIX)
            .arg(EXTERNAL_SEGMENT)
            .invoke_async(&mut conn)
            .await?;
        let released = usize::try_from(int_at(&reply, 0).unwrap_or(0)).unwrap_or(0);
        let mut running = Vec::new();
        for pair in reply[1.min(reply.len())..].chunks(2) {
            let strings: Vec<String> = pair
                .iter()
                .map(|v| redis::from_redis_value::<String>(v.clone()))
                .collect::<Result<_, _>>()?;
            if let [id, token] = strings.as_slice() {
                running.push((id.clone(), token.clone()));
            }
        }
        Ok((released, running))
    }

    /// What job `id`'s results hash records about a post with Idempotency-Key `key`, lease
    /// `token` (if given) and for `attempt`: the answer recorded for the key, and whether a
    /// posted result settled that lease or attempt. Written only by `settle`.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn posted_results(&self, id: &str, key: &str, token: Option<&str>, attempt: u32) -> Result<PostedResults, StoreError> {
        let shard = self.shard_of_job(id)?;
        let mut conn = self.conn.clone();
        let (answer, by_token, by_attempt): (Option<String>, Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.job_results(shard, id))
            .arg(format!("k:{key}"))
            .arg(format!("t:{}", token.unwrap_or_default()))
            .arg(format!("a:{attempt}"))
            .query_async(&mut conn)
            .await?;
        Ok(PostedResults {
            answer,
            token_settled: token.is_some() && by_token.is_some(),
            attempt_settled: by_attempt.is_some(),
        })
    }

    /// The queue names that ever held a job in `shard`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn queues(&self, shard: u32) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.queues(shard)).query_async(&mut conn).await?;
        names.sort();
        Ok(names)
    }
}
