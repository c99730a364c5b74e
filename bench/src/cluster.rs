//! `sluice bench --cluster`: the no-op drain on a Redis Cluster, its jobs spread evenly over
//! `shards` shards (so over the masters serving their hash tags), drained by in-process
//! workers that lease from every shard in turn.
//!
//! Run it against clusters of different sizes with the same shards to see how the drain
//! rate follows the masters (`docs/SCALING.md`). The run writes under its own key prefix and
//! deletes its keys on every master when it is done.
//!
//! A shard's slot is a hash of its tag, which contains the prefix, so how the shards fall on
//! the masters depends on the prefix: with 8 shards on 3 masters anything from 3/3/2 to 6/1/1
//! happens. An operator balances the shards' slots over the masters; the bench does the
//! equivalent by trying [`PREFIX_CANDIDATES`] prefixes and keeping the one whose shards
//! spread most evenly, and reports the spread it ran with.

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
/// Prefixes tried for the most even spread of the shards over the masters.
pub const PREFIX_CANDIDATES: usize = 32;

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
    /// How many of the shards each master serves, by master address.
    pub shards_per_master: std::collections::BTreeMap<String, u32>,
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
            "cluster drain: {} no-op jobs over {} shards on {} masters (shards per master: {:?}), {} worker(s) x {}: {:.0} jobs/s ({:.2} s)\n",
            self.rate.count,
            self.shards,
            self.masters,
            self.shards_per_master.values().collect::<Vec<_>>(),
            self.workers,
            self.concurrency,
            self.rate.per_second,
            self.rate.seconds
        )
    }
}

/// Deletes every key containing `marker` on every master (a `SCAN` per master).
async fn delete_everywhere(masters: &[String], marker: &str) -> anyhow::Result<()> {
    for address in masters {
        let mut conn = crate::connect(&format!("redis://{address}")).await?;
        crate::delete_keys(&mut conn, marker).await?;
    }
    Ok(())
}

/// Runs the drain.
///
/// # Errors
/// The cluster is unreachable, or the drain fails.
pub async fn run(options: &ClusterOptions) -> anyhow::Result<ClusterDrain> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let base = format!("bench{}x{stamp}-cluster", std::process::id());
    let shards = options.shards.max(1);
    let mut conn = crate::connect(&options.seed).await?;
    let slots = slot_map(&mut conn, seed_host(&options.seed)).await?;
    let masters: Vec<String> = slots
        .iter()
        .map(|(_, _, a)| a.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (prefix, spread) = {
        let mut best: Option<(String, std::collections::BTreeMap<String, u32>)> = None;
        for k in 0..PREFIX_CANDIDATES {
            let prefix = format!("{base}{k}");
            let keys = sluice_store::Keys::new(prefix.clone(), shards);
            let mut spread: std::collections::BTreeMap<String, u32> =
                slots.iter().map(|(_, _, a)| (a.clone(), 0)).collect();
            for shard in 0..shards {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(keys.leased(shard))
                    .query_async(&mut conn)
                    .await?;
                let owner = slots
                    .iter()
                    .find(|(first, last, _)| (*first..=*last).contains(&slot))
                    .ok_or_else(|| anyhow::anyhow!("slot {slot} is not served by any master"))?;
                *spread.entry(owner.2.clone()).or_default() += 1;
            }
            let busiest = |s: &std::collections::BTreeMap<String, u32>| {
                s.values().copied().max().unwrap_or(0)
            };
            if best
                .as_ref()
                .is_none_or(|(_, b)| busiest(&spread) < busiest(b))
            {
                best = Some((prefix, spread));
            }
        }
        best.ok_or_else(|| anyhow::anyhow!("no prefix tried"))?
    };
    let store = Store::connect(StoreConfig {
        url: options.seed.clone(),
        cluster: true,
        prefix: prefix.clone(),
        shards,
        ..StoreConfig::default()
    })
    .await?;
    let engine = Engine::new(store, Arc::new(SystemClock));

    let n = options.jobs.max(1);
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let shard = u32::try_from(i).unwrap_or(0) % shards;
            NewJob::new(
                ids::new_id(ids::JOB, shard),
                QUEUE,
                kinds::NOOP,
                json!({ "i": i }),
            )
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
        handles.push(tokio::spawn(async move {
            worker.run(async move { s.cancelled().await }).await
        }));
    }
    loop {
        let stats = engine
            .store()
            .queue_stats(Some(QUEUE), engine.now(), 60_000)
            .await?;
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
        shards_per_master: spread,
        shards,
        workers: options.workers.max(1),
        concurrency: options.concurrency.max(1),
        rate: Rate::new(n, elapsed, false),
    })
}

/// The host of a `redis://[user:pass@]host:port[/db]` URL.
fn seed_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split([':', '/']).next().unwrap_or_default()
}

/// The slot ranges of the masters, from `CLUSTER SLOTS`: `(first, last, "host:port")`. A
/// node that does not know its own address yet (a one-node cluster) answers an empty host:
/// `seed_host` stands for it.
async fn slot_map(
    conn: &mut redis::aio::MultiplexedConnection,
    seed_host: &str,
) -> anyhow::Result<Vec<(u16, u16, String)>> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut out = Vec::new();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(first), Some(last), Some(redis::Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            anyhow::bail!("CLUSTER SLOTS: unexpected range {parts:?}")
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            anyhow::bail!("CLUSTER SLOTS: unexpected node {master:?}")
        };
        let host: String = redis::from_redis_value(host.clone())?;
        let host = if host.is_empty() {
            seed_host.to_string()
        } else {
            host
        };
        let port: u16 = redis::from_redis_value(port.clone())?;
        out.push((
            redis::from_redis_value(first.clone())?,
            redis::from_redis_value(last.clone())?,
            format!("{host}:{port}"),
        ));
    }
    Ok(out)
}
