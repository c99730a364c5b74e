//! Executions: start (target slot, idempotency key, first job, events in one script),
//! reads, and counts by status.

use std::collections::HashMap;

use redis::Value as RValue;
use serde_json::json;
use sluice_core::execution::{self, Plan, StartRequest};
use sluice_core::{Execution, ExecutionStatus, Millis, ids};

use crate::plan::{self, KeyList};
use crate::{Store, StoreError, codec, contract};

/// Answer of [`Store::start_execution`].
#[derive(Debug, Clone)]
pub enum StartOutcome {
    /// A new execution.
    Started(Execution),
    /// The idempotency key was used before; this is the execution it started.
    Existing(Execution),
    /// The target has a live execution (this id).
    Busy {
        /// The live execution holding the target.
        holder: String,
    },
}

/// Answer of [`Store::operate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperateOutcome {
    /// Committed.
    Applied,
    /// The execution moved on (this is its revision now); plan again on fresh state.
    Conflict(u64),
    /// The plan claims a target another execution holds (this one).
    Busy(String),
}

impl Store {
    /// Commits an operator action's `plan`, made from `base`: guarded by `base`'s revision
    /// and, for a retry or restart of a terminal execution, by the target being free.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn operate(&self, base: &Execution, plan: &Plan, now: Millis) -> Result<OperateOutcome, StoreError> {
        let shard = ids::shard_of(&base.id, ids::EXECUTION)?;
        let mut keys = KeyList::for_shard(&self.keys, shard);
        let tail = plan::tail(&self.keys, &mut keys, shard, plan, Some(base), now);
        let mut inv = self.with_keys(&self.scripts.operate, keys, now);
        inv.arg(json!({ "tail": tail }).to_string());
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
        let word = |i: usize| match reply.get(i) {
            Some(RValue::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        match word(0).as_deref() {
            Some("ok") => {
                self.metrics().jobs_enqueued(&plan.jobs);
                Ok(OperateOutcome::Applied)
            }
            Some("conflict") => Ok(OperateOutcome::Conflict(match reply.get(1) {
                Some(RValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            })),
            Some("busy") => Ok(OperateOutcome::Busy(word(1).ok_or_else(|| contract("operate", &reply))?)),
            _ => Err(contract("operate", reply)),
        }
    }

    /// The shard of a new execution: from its target, else its idempotency key, else random.
    pub fn shard_for_execution(&self, target: Option<&str>, idempotency_key: Option<&str>) -> u32 {
        match target.or(idempotency_key) {
            Some(key) => ids::shard_for_key(key, self.shards()),
            None => ids::random_shard(self.shards()),
        }
    }

    /// Starts an execution: claims the target's live slot and the idempotency key, writes
    /// the execution and enqueues its first step's job, atomically.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn start_execution(&self, req: StartRequest, now: Millis) -> Result<StartOutcome, StoreError> {
        let shard = self.shard_for_execution(req.target.as_deref(), req.idempotency_key.as_deref());
        let id = ids::new_id(ids::EXECUTION, shard);
        let exec_key = self.keys.execution(shard, &id);
        let target_key = req.target.as_deref().map(|t| self.keys.target(shard, t));
        let idem_key = req.idempotency_key.as_deref().map(|k| self.keys.idempotency(shard, k));
        let plan = execution::plan_start(req, id.clone(), ids::new_id(ids::JOB, shard), now);
        let mut keys = KeyList::for_shard(&self.keys, shard);
        keys.add(target_key.clone().unwrap_or_else(|| exec_key.clone()));
        keys.add(idem_key.clone().unwrap_or_else(|| exec_key.clone()));
        let tail = plan::tail(&self.keys, &mut keys, shard, &plan, None, now);
        let ttl_ms = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut inv = self.with_keys(&self.scripts.start_execution, keys, now);
        inv.arg(&id)
            .arg(u8::from(target_key.is_some()))
            .arg(u8::from(idem_key.is_some()))
            .arg(ttl_ms)
            .arg(json!({ "tail": tail }).to_string());
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
        let word = |i: usize| match reply.get(i) {
            Some(RValue::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        match word(0).as_deref() {
            Some("ok") => {
                self.metrics().jobs_enqueued(&plan.jobs);
                let mut exec = plan.execution.ok_or_else(|| contract("start_execution", "no plan"))?;
                exec.rev = 1;
                Ok(StartOutcome::Started(exec))
            }
            Some("existing") => {
                let existing = word(1).ok_or_else(|| contract("start_execution", &reply))?;
                match self.get_execution(&existing).await? {
                    Some(exec) => Ok(StartOutcome::Existing(exec)),
                    None => Err(StoreError::Corrupt {
                        key: idem_key.unwrap_or_default(),
                        reason: format!("names execution {existing}, which does not exist"),
                    }),
                }
            }
            Some("busy") => Ok(StartOutcome::Busy {
                holder: word(1).ok_or_else(|| contract("start_execution", &reply))?,
            }),
            _ => Err(contract("start_execution", reply)),
        }
    }

    /// Reads an execution.
    ///
    /// # Errors
    /// Redis errors; a malformed id or record.
    pub async fn get_execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        let shard = ids::shard_of(id, ids::EXECUTION)?;
        if shard >= self.shards() {
            return Ok(None);
        }
        let key = self.keys.execution(shard, id);
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        if map.is_empty() {
            return Ok(None);
        }
        codec::execution_from_hash(&key, &map).map(Some)
    }

    /// How many executions are in each status, over every shard: every status, in the
    /// order of [`ExecutionStatus::ALL`], with zeros (one pipeline of `ZCARD`s per shard on
    /// the per-status indexes).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut counts = ExecutionStatus::ALL.map(|status| (status, 0u64));
        let mut conn = self.conn.clone();
        for shard in 0..self.shards() {
            let mut pipe = redis::pipe();
            for (status, _) in &counts {
                pipe.zcard(self.keys.executions_by_status(shard, status.as_str()));
            }
            let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
            for ((_, count), size) in counts.iter_mut().zip(sizes) {
                *count += size;
            }
        }
        Ok(counts.to_vec())
    }
}
