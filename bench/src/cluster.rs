//! `sluice bench --cluster`: the no-op drain on a Redis Cluster, its jobs spread evenly over
//! `shards` shards (so over the masters serving their hash tags), drained by in-process
//! workers that lease from every shard in turn.
//!
//! Run it against clusters of different sizes with the same shards to see how the drain
//! rate follows the masters (`docs/SCALING.md`). The run writes under its own key prefix and
//! deletes its keys on every master when it is done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sluice_core::job::{NewJob, kinds};
use sluice_core::{SystemClock, ids};
use sluice_store::engine::Engine;
use sluice_store::{Store, StoreConfig};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::Rate;

const QUEUE: &str = "bench";
const CHUNK: usize = 1_000;
const POLL: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A node of the cluster (the others are discovered from it).
    pub seed: String,
    /// Shards (`redis.shards`) the jobs are spread over.
    pub shards: u32,
    /// Jobs to drain.
    pub jobs: usize,
    /// Workers, each a [`Worker`] of its own in this process.
    pub workers: usize,
    /// Concurrency of each worker.
    pub concurrency: usize,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterDrain {
    /// Masters of the cluster.
    pub masters: usize,
    /// Masters serving at least one of the shards.
    pub masters_used: usize,
    /// Shards.
    pub shards: u32,
    /// Workers.
    pub workers: usize,
    /// Concurrency of each worker.
    pub concurrency: usize,
    /// The drain: jobs completed per second, from the workers' start to the last job.
    pub rate: Rate,
}

impl ClusterDrain {
    /// A one-paragraph text report.
    pub fn text(&self) -> String {
        format!(
            "cluster drain: {} no-op jobs over {} shards on {} of {} masters, {} worker(s) x {}: {:.0} jobs/s ({:.2} s)\n",
            self.rate.count,
            self.shards,
            self.masters_used,
            self.masters,
            self.workers,
            self.concurrency,
            self.rate.per_second,
            self.rate.seconds
        )
    }
}

/// The `(host, port)` of every master, from `CLUSTER NODES` on the seed.
async fn masters(seed: &str) -> anyhow::Result<Vec<(String, u16)>> {
    let mut conn = crate::connect(seed).await?;
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || !fields[2].split(',').any(|f| f == "master") {
            continue;
        }
        // ip:port@bus[,hostname]
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("CLUSTER NODES: bad address `{address}`"))?;
        out.push((host.to_string(), port.parse()?));
    }
    anyhow::ensure!(!out.is_empty(), "CLUSTER NODES lists no master: is `{seed}` a cluster node?");
    Ok(out)
}

/// Deletes every key containing `marker` on every master (a `SCAN` per master; one
/// `UNLINK` per key, since the keys of one node may be in different slots).
async fn delete_everywhere(masters: &[(String, u16)], marker: &str) -> anyhow::Result<()> {
    for (host, port) in masters {
        let mut conn = crate::connect(&format!("redis://{host}:{port}")).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{marker}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("UNLINK").arg(key).ignore();
                }
                let () = pipe.query_async(&mut conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// Runs the drain.
///
/// # Errors
/// The cluster is unreachable, or the drain fails.
pub async fn run(options: &ClusterOptions) -> anyhow::Result<ClusterDrain> {
    let masters = masters(&options.seed).await?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("bench{}x{stamp}-cluster", std::process::id());
    let store = Store::connect(StoreConfig {
        url: options.seed.clone(),
        cluster: true,
        prefix: prefix.clone(),
        shards: options.shards.max(1),
        ..StoreConfig::default()
    })
    .await?;
    let engine = Engine::new(store, Arc::new(SystemClock));
    let shards = engine.store().shards();
    let used = {
        let mut conn = crate::connect(&options.seed).await?;
        let mut homes = std::collections::BTreeSet::new();
        for shard in 0..shards {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(engine.store().keys().leased(shard))
                .query_async(&mut conn)
                .await?;
            homes.insert(slot_owner(&mut conn, slot).await?);
        }
        homes.len()
    };

    let n = options.jobs.max(1);
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let shard = u32::try_from(i).unwrap_or(0) % shards;
            NewJob::new(ids::new_id(ids::JOB, shard), QUEUE, kinds::NOOP, json!({ "i": i }))
        })
        .collect();
    for chunk in jobs.chunks(CHUNK) {
        engine.store().enqueue(chunk, engine.now()).await?;
    }

    let stop = CancellationToken::new();
    let began = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..options.workers.max(1) {
        let config = WorkerConfig {
            queues: vec![QUEUE.into()],
            concurrency: options.concurrency.max(1),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(engine.clone(), config)?;
        let s = stop.clone();
        handles.push(tokio::spawn(async move { worker.run(async move { s.cancelled().await }).await }));
    }
    loop {
        let stats = engine.store().queue_stats(Some(QUEUE), engine.now(), 60_000).await?;
        let completed = stats.first().map_or(0, |q| q.completed);
        if completed >= n as u64 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = began.elapsed();
    stop.cancel();
    for handle in handles {
        handle.await?;
    }
    delete_everywhere(&masters, &prefix).await?;
    Ok(ClusterDrain {
        masters: masters.len(),
        masters_used: used,
        shards,
        workers: options.workers.max(1),
        concurrency: options.concurrency.max(1),
        rate: Rate::new(n, elapsed, false),
    })
}

/// The address of the master serving `slot`, from `CLUSTER SLOTS`.
async fn slot_owner(conn: &mut redis::aio::MultiplexedConnection, slot: u16) -> anyhow::Result<String> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    for range in ranges {
        let redis::Value::Array(parts) = range else { continue };
        let (Some(first), Some(last), Some(master)) = (parts.first(), parts.get(1), parts.get(2)) else { continue };
        let (first, last): (u16, u16) = (redis::from_redis_value(first.clone())?, redis::from_redis_value(last.clone())?);
        if (first..=last).contains(&slot) {
            let (host, port): (String, u16) = match master {
                redis::Value::Array(node) if node.len() >= 2 => {
                    (redis::from_redis_value(node[0].clone())?, redis::from_redis_value(node[1].clone())?)
                }
                other => anyhow::bail!("CLUSTER SLOTS: unexpected node {other:?}"),
            };
            return Ok(format!("{host}:{port}"));
        }
    }
    anyhow::bail!("slot {slot} is not served by any master")
}
