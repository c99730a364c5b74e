//! Queues as operators see them: counts, the oldest waiting job, pause and resume, and the
//! workers serving them.
//!
//! A queue's figures add up both its lanes (the jobs sluice's workers run and the jobs left
//! to external workers, see [`Lane`]); `external_ready` tells how many of the ready ones wait
//! for an external worker. Pause and resume act on both lanes.
//!
//! Every figure is read from a small key or a bounded set: ready and delayed counts are
//! `ZCARD`s, the oldest waiting job is the head of the queue's `since` set, outcome totals
//! are counters the scripts keep, and reserved/running jobs come from the shard's leased set
//! (as large as the jobs in flight, never the backlog). Nothing here scans a queue.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sluice_core::Millis;

use crate::keys::Lane;
use crate::{Store, StoreError};

/// Workers not heard from for this long are dropped from the registry.
const WORKER_FORGET_MS: Millis = 10 * 60 * 1000;

/// One queue's figures, summed over the shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Pending and ready to run (both lanes).
    pub ready: u64,
    /// Of `ready`, the jobs waiting for an external worker (kinds sluice's workers do not
    /// run).
    pub external_ready: u64,
    /// Pending until a later time (delay, retry backoff).
    pub delayed: u64,
    /// Pending in a worker's prefetch buffer.
    pub reserved: u64,
    /// Running.
    pub running: u64,
    /// Completed since the queue first held a job.
    pub completed: u64,
    /// Failed for good since then.
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Cancelled while pending.
    pub cancelled: u64,
    /// Age of the job waiting longest in the ready set, in ms.
    pub oldest_ready_age_ms: Option<Millis>,
    /// Whether leases of the queue are paused.
    pub paused: bool,
    /// Live workers serving the queue.
    pub workers: Vec<String>,
}

/// A worker as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: String,
    /// Queues it leases from.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it started (ms).
    pub started_at: Millis,
    /// sluice version.
    pub version: String,
    /// Last heartbeat (ms).
    pub last_seen: Millis,
}

impl Store {
    /// Figures of every queue (or of `only`), sorted by name. Workers count as live when
    /// seen within `live_within` ms of `now`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn queue_stats(&self, only: Option<&str>, now: Millis, live_within: Millis) -> Result<Vec<QueueStats>, StoreError> {
        let workers = self.workers(now).await?;
        let mut out: BTreeMap<String, QueueStats> = BTreeMap::new();
        let mut conn = self.conn.clone();
        for shard in 0..self.shards() {
            let names: Vec<String> = match only {
                Some(q) => vec![q.to_string()],
                None => self.queues(shard).await?,
            };
            let lanes: Vec<(&String, Lane)> = names.iter().flat_map(|q| Lane::ALL.map(|lane| (q, lane))).collect();
            let mut pipe = redis::pipe();
            for (q, lane) in &lanes {
                pipe.zcard(self.keys.ready(shard, q, *lane))
                    .zcard(self.keys.delayed(shard, q, *lane))
                    .cmd("ZRANGE")
                    .arg(self.keys.queue_since(shard, q, *lane))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .hgetall(self.keys.queue_stats(shard, q, *lane))
                    .exists(self.keys.queue_paused(shard, q, *lane));
            }
            type Row = (u64, u64, Vec<(String, f64)>, HashMap<String, u64>, bool);
            let rows: Vec<Row> = if lanes.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
            for ((q, lane), (ready, delayed, head, counters, paused)) in lanes.into_iter().zip(rows) {
                let s = out.entry(q.clone()).or_insert_with(|| QueueStats { queue: q.clone(), ..QueueStats::default() });
                s.ready += ready;
                if lane == Lane::External {
                    s.external_ready += ready;
                }
                s.delayed += delayed;
                let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
                s.completed += counter("completed");
                s.failed += counter("failed");
                s.retried += counter("retried");
                s.cancelled += counter("cancelled");
                s.paused |= paused;
                #[allow(clippy::cast_possible_truncation)]
                if let Some((_, since)) = head.first() {
                    let age = (now - *since as Millis).max(0);
                    s.oldest_ready_age_ms = Some(s.oldest_ready_age_ms.map_or(age, |a| a.max(age)));
                }
            }
            self.count_in_flight(shard, &mut out, only).await?;
        }
        for s in out.values_mut() {
            s.workers = workers
                .iter()
                .filter(|w| now - w.last_seen <= live_within && w.queues.contains(&s.queue))
                .map(|w| w.id.clone())
                .collect();
        }
        Ok(out.into_values().collect())
    }

    /// Adds the shard's reserved and running jobs to their queues' figures.
    async fn count_in_flight(&self, shard: u32, out: &mut BTreeMap<String, QueueStats>, only: Option<&str>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE").arg(self.keys.leased(shard)).arg(0).arg(-1).query_async(&mut conn).await?;
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET").arg(self.keys.job(shard, id)).arg("queue").arg("status");
            }
            let rows: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
            for (queue, status) in rows {
                let Some(queue) = queue else { continue };
                if only.is_some_and(|q| q != queue) {
                    continue;
                }
                let s = out.entry(queue.clone()).or_insert_with(|| QueueStats { queue, ..QueueStats::default() });
                match status.as_deref() {
                    Some("running") => s.running += 1,
                    Some("pending") => s.reserved += 1,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Pauses (`true`) or resumes (`false`) leasing from `queue` (both lanes) in every
    /// shard. Jobs already leased run on; enqueueing goes on. Idempotent.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for shard in 0..self.shards() {
            for lane in Lane::ALL {
                let key = self.keys.queue_paused(shard, queue, lane);
                if paused {
                    pipe.set(key, "1").ignore();
                } else {
                    pipe.del(key).ignore();
                }
            }
        }
        if !paused {
            // Idle workers of the queue wait for a notification: wake them.
            for lane in Lane::ALL {
                pipe.publish(self.keys.notify_channel(queue, lane), "1").ignore();
            }
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Records a worker's heartbeat (its registry entry expires after `ttl_ms` without one).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn register_worker(&self, info: &WorkerInfo, ttl_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.worker(&info.id);
        let () = redis::pipe()
            .zadd(self.keys.workers(), &info.id, info.last_seen)
            .ignore()
            .hset_multiple(
                &key,
                &[
                    ("queues", info.queues.join(",")),
                    ("concurrency", info.concurrency.to_string()),
                    ("host", info.host.clone()),
                    ("pid", info.pid.to_string()),
                    ("started_at", info.started_at.to_string()),
                    ("version", info.version.clone()),
                ],
            )
            .ignore()
            .pexpire(&key, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes a worker from the registry (clean shutdown).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn unregister_worker(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .zrem(self.keys.workers(), id)
            .ignore()
            .del(self.keys.worker(id))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Workers heard from in the last 10 minutes, most recent first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn workers(&self, now: Millis) -> Result<Vec<WorkerInfo>, StoreError> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.workers())
            .arg("-inf")
            .arg(format!("({}", now - WORKER_FORGET_MS))
            .query_async(&mut conn)
            .await?;
        let seen: Vec<(String, f64)> =
            redis::cmd("ZREVRANGE").arg(self.keys.workers()).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut conn).await?;
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &seen {
            pipe.hgetall(self.keys.worker(id));
        }
        let infos: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        #[allow(clippy::cast_possible_truncation)]
        let out = seen
            .into_iter()
            .zip(infos)
            .filter(|(_, info)| !info.is_empty())
            .map(|((id, last_seen), info)| {
                let get = |k: &str| info.get(k).cloned().unwrap_or_default();
                WorkerInfo {
                    id,
                    queues: get("queues").split(',').filter(|q| !q.is_empty()).map(str::to_string).collect(),
                    concurrency: get("concurrency").parse().unwrap_or(0),
                    host: get("host"),
                    pid: get("pid").parse().unwrap_or(0),
                    started_at: get("started_at").parse().unwrap_or(0),
                    version: get("version"),
                    last_seen: last_seen as Millis,
                }
            })
            .collect();
        Ok(out)
    }
}
