//! The sluice store: the only crate that talks to Redis.
//!
//! - [`keys`] builds every key; all keys of a shard share one hash tag. Each queue has two
//!   lanes ([`Lane`]): the jobs sluice's workers run, and the jobs left to external workers.
//! - `lua/*.lua` holds one script per atomic operation, each with a header documenting its
//!   KEYS, ARGV, return value and invariant; [`scripts`] loads them.
//! - [`Store`] wraps each script in one typed method, and [`engine`] runs the
//!   read → plan (in `sluice-core`) → commit loop that turns a settled job into the next state
//!   of its execution, recomputing on a lost revision race.
//! - [`Pulse`] records a service loop's rounds against Redis and their outcome, for a
//!   supervisor such as the systemd watchdog or a readiness probe.
//!
//! - The store carries the process's [`Metrics`] ([`Store::metrics`]): it times its Redis
//!   calls (`timed`) and counts the jobs its commits create; the engine and the worker
//!   record the rest through the same handle.
//!
//! Invariants: every write by a lease holder is fenced by its token; every execution write
//! is a compare-and-set on its revision; scripts never read the clock or decide anything,
//! `now` and every decision arrive as arguments.

pub mod engine;
pub mod keys;
mod batch;
mod codec;
mod executions;
mod jobs;
mod notify;
mod pipelines;
mod query;
mod queues;
mod plan;
mod pulse;
mod schedules;
mod scheduling;
mod scripts;
mod timed;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
/// The metrics vocabulary (`sluice-metrics`), for the crates that record through the store.
pub use sluice_metrics as metrics;
pub use sluice_metrics::Metrics;

pub use executions::{OperateOutcome, StartOutcome};
pub use jobs::{
    AWAITING_RESULT, CancelOutcome, EnqueueOutcome, LeaseState, Leased, PostedResults, ResultRecord, SettleOutcome,
    StartOutcome as JobStart,
};
pub use keys::{Keys, Lane};
pub use notify::{ExternalWakeups, Notifier};
pub use pipelines::StoredPipeline;
pub use pulse::Pulse;
pub use query::{EventCursor, EventReader, ExecutionFilter, ListCursor, MAX_PAGE, Page, StoredEvent};
pub use queues::{QueueStats, WorkerInfo};
pub use scheduling::{Created, FireReport, RanNow, ScheduleFilter, Updated};
pub use schedules::{Fire, FireAction, FireOutcome, NameClaim, PutOutcome, RunCursor, RunPage, StartFire};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A Redis reply has an unexpected shape.
    #[error("redis reply: {0}")]
    Reply(#[from] redis::ParsingError),
    /// A stored record cannot be read.
    #[error("stored record `{key}` is unreadable: {reason}")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A script answered something its contract does not allow.
    #[error("script `{script}` answered unexpectedly: {reply}")]
    Contract {
        /// The script.
        script: &'static str,
        /// What it answered.
        reply: String,
    },
    /// An id is malformed.
    #[error(transparent)]
    BadId(#[from] sluice_core::ids::BadId),
    /// Too many lost revision races in a row on one execution.
    #[error("execution `{0}` is being modified concurrently; try again")]
    Contended(String),
}

/// Connection attempts a call makes beyond the first while the connection is down: none,
/// the caller retries with its own backoff.
const RECONNECT_RETRIES: usize = 0;

/// Connection and layout settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://host:port[/db]`; on a cluster, a seed node (`redis.url`).
    pub url: String,
    /// Whether Redis is a Redis Cluster (`redis.cluster`): commands are routed to the master
    /// serving their slot, and each shard lives in the slot of its hash tag.
    pub cluster: bool,
    /// More seed nodes of a cluster besides `url` (`redis.seeds`); ignored without
    /// `cluster`.
    pub seeds: Vec<String>,
    /// Key prefix (`redis.prefix`).
    pub prefix: String,
    /// Number of shards (`redis.shards`), fixed per deployment.
    pub shards: u32,
    /// Approximate cap of each shard's event stream.
    pub event_cap: u64,
    /// How long an idempotency key keeps returning its execution.
    pub idempotency_ttl: Duration,
    /// Time limit of one Redis call.
    pub response_timeout: Duration,
    /// How long a schedule's history rows are kept (`scheduler.history_retention`).
    pub schedule_history_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            seeds: Vec::new(),
            prefix: "sluice".into(),
            shards: 1,
            event_cap: 100_000,
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            response_timeout: Duration::from_secs(5),
            schedule_history_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl StoreConfig {
    /// The nodes to connect to: `url`, then on a cluster every one of `seeds`.
    pub fn nodes(&self) -> Vec<&str> {
        let seeds = if self.cluster { &self.seeds[..] } else { &[] };
        std::iter::once(self.url.as_str()).chain(seeds.iter().map(String::as_str)).collect()
    }

    /// Checks the connection settings without connecting: one problem per bad field, each
    /// naming it (`redis.url`, `redis.seeds`).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            problems.push(format!("redis.url `{}` is not a Redis URL such as redis://127.0.0.1:6379: {e}", self.url));
        }
        if !self.cluster && !self.seeds.is_empty() {
            problems.push("redis.seeds is only for a Redis Cluster: set redis.cluster = true, or remove it".to_string());
        }
        for seed in &self.seeds {
            if let Err(e) = redis::Client::open(seed.as_str()) {
                problems.push(format!("redis.seeds: `{seed}` is not a Redis URL such as redis://10.0.0.2:6379: {e}"));
            }
        }
        problems
    }
}

/// A handle on the store. Cheap to clone; clones share one multiplexed connection that
/// reconnects on its own with backoff (on a cluster: one per master, routed by slot), and
/// one [`Metrics`].
#[derive(Clone)]
pub struct Store {
    pub(crate) conn: timed::TimedConnection,
    /// A client per configured node (`redis.url`, then on a cluster `redis.seeds`), for the
    /// connections of their own: Pub/Sub subscriptions and blocking reads.
    pub(crate) nodes: Arc<[redis::Client]>,
    pub(crate) keys: Keys,
    pub(crate) scripts: Arc<scripts::Scripts>,
    pub(crate) config: Arc<StoreConfig>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("prefix", &self.keys.prefix()).finish_non_exhaustive()
    }
}

impl Store {
    /// Connects (the first connection must succeed; later drops are reconnected), with
    /// metrics of its own (see [`Store::with_metrics`]). On a cluster
    /// ([`StoreConfig::cluster`]) the seeds must lead to every master.
    ///
    /// # Errors
    /// A URL is invalid or Redis cannot be reached.
    pub async fn connect(config: StoreConfig) -> Result<Self, StoreError> {
        let urls = config.nodes();
        let nodes = urls.iter().map(|url| redis::Client::open(*url)).collect::<Result<Arc<[_]>, _>>()?;
        let link = if config.cluster {
            let client = ClusterClient::builder(urls)
                .response_timeout(config.response_timeout)
                .connection_timeout(Duration::from_secs(2))
                .max_retry_wait(2000)
                .build()?;
            timed::Link::Cluster(client.get_async_connection().await?)
        } else {
            // While Redis is unreachable a call makes one connection attempt and fails
            // (within the connection timeout), instead of waiting through a series of
            // retries (seconds): the API answers 503 at once, and every service loop retries
            // with its own backoff, which bounds the connection attempts.
            let manager_config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.response_timeout))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_max_delay(Duration::from_secs(2));
            timed::Link::Single(ConnectionManager::new_with_config(nodes[0].clone(), manager_config).await?)
        };
        let conn = timed::TimedConnection::new(link, Arc::default());
        let keys = Keys::new(config.prefix.clone(), config.shards);
        Ok(Self { conn, nodes, keys, scripts: Arc::new(scripts::Scripts::load()), config: Arc::new(config) })
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The same store recording into `metrics`: the handle a process shares between its
    /// roles (`sluice up` runs the API, the scheduler and a worker over one store).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.conn.metrics = metrics;
        self
    }

    /// The metrics this store, and the engine and worker over it, record into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.conn.metrics
    }

    /// The key builder.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.keys.shards()
    }

    /// Checks that Redis answers and loads every script (used by `/readyz`).
    ///
    /// # Errors
    /// Redis is unreachable or refuses a script.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        for script in self.scripts.all() {
            script.load_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Counts of the commands Redis has run, by command (from `INFO commandstats`; on a
    /// cluster, summed over the masters), for measuring the cost of operations.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn command_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("INFO").arg("commandstats").clone();
        // A cluster answers with each master's text, by address.
        let infos: Vec<String> = if self.is_cluster() {
            cmd.query_async::<std::collections::HashMap<String, String>>(&mut conn).await?.into_values().collect()
        } else {
            vec![cmd.query_async(&mut conn).await?]
        };
        let mut out = std::collections::BTreeMap::new();
        for line in infos.iter().flat_map(|info| info.lines()) {
            // cmdstat_zadd:calls=10,usec=20,...
            if let Some(rest) = line.strip_prefix("cmdstat_")
                && let Some((name, stats)) = rest.split_once(':')
                && let Some(calls) = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))
            {
                *out.entry(name.to_string()).or_insert(0) += calls.parse::<u64>().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// Resets the counters read by [`Store::command_counts`].
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn reset_command_counts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await?;
        Ok(())
    }
}

/// Turns a script's status reply into an error naming the script.
pub(crate) fn contract(script: &'static str, reply: impl std::fmt::Debug) -> StoreError {
    StoreError::Contract { script, reply: format!("{reply:?}") }
}

/// Whether a Redis answers `PING` at `url` within one second (used by `sluice up` to decide
/// whether to start a private server).
pub async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(_)))
}
