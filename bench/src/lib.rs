//! `sluice bench`: throughput, latency and Redis cost of sluice on one Redis, with the
//! published apalis-redis worker measured in the same run on the same Redis as a baseline,
//! and `redis-benchmark` as the physical reference.
//!
//! Every scenario writes under its own key prefix (which contains the run's id) and deletes
//! its keys when it is done, so the Redis it runs against needs no flushing; it should still
//! be a private one, since `INFO commandstats` is reset and read for the whole server.

mod apalis_baseline;
pub mod cluster;
mod report;
mod sluice_side;

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

pub use report::Report;

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Redis to run against.
    pub redis_url: String,
    /// Jobs per enqueue and drain scenario.
    pub jobs: usize,
    /// Worker concurrencies of the drain scenario.
    pub concurrencies: Vec<usize>,
    /// Backlog sizes of the drain-at-backlog scenario (concurrency 64).
    pub backlogs: Vec<usize>,
    /// Idle pickup samples.
    pub latency_samples: usize,
    /// Executions of the 5-step pipeline scenario.
    pub pipelines: usize,
    /// Whether to run the apalis-redis baseline.
    pub apalis: bool,
    /// The longest an apalis-redis drain may take before it is cut off and reported as such.
    pub apalis_drain_cap: Duration,
    /// The longest one apalis-redis idle pickup sample may wait.
    pub apalis_pickup_cap: Duration,
    /// Whether to run `redis-benchmark` (when installed) against the same Redis.
    pub redis_benchmark: bool,
}

impl Options {
    /// Full-size defaults against `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            jobs: 20_000,
            concurrencies: vec![1, 16, 64],
            backlogs: vec![1_000, 1_000_000],
            latency_samples: 200,
            pipelines: 2_000,
            apalis: true,
            apalis_drain_cap: Duration::from_secs(60),
            apalis_pickup_cap: Duration::from_secs(5),
            redis_benchmark: true,
        }
    }
}

/// A rate measured over `count` items.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Items done.
    pub count: usize,
    /// Seconds taken.
    pub seconds: f64,
    /// Items per second.
    pub per_second: f64,
    /// Whether the run was cut off by its time cap before every item was done.
    pub capped: bool,
}

impl Rate {
    fn new(count: usize, elapsed: Duration, capped: bool) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            count,
            seconds,
            per_second: if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            },
            capped,
        }
    }
}

/// Latency percentiles in milliseconds over the samples taken.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples that arrived.
    pub samples: usize,
    /// Samples that did not arrive within the cap (`timeout_ms`).
    pub timed_out: usize,
    /// The cap of one sample, when there was one.
    pub timeout_ms: Option<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest.
    pub max_ms: Option<f64>,
}

impl Latency {
    fn of(mut ms: Vec<f64>, timed_out: usize, timeout: Option<Duration>) -> Self {
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if ms.is_empty() {
                return None;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            Some(ms[rank - 1])
        };
        Self {
            samples: ms.len(),
            timed_out,
            timeout_ms: timeout.map(|t| t.as_secs_f64() * 1000.0),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: ms.last().copied(),
        }
    }
}

/// Redis work per item, from `INFO commandstats` deltas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisCost {
    /// Calls a client made per item: script invocations (`EVAL`/`EVALSHA`/`FCALL`) plus
    /// plain commands outside scripts, whose count is known only when no script runs them.
    pub calls_per_item: f64,
    /// Commands Redis executed per item, including those run inside scripts.
    pub commands_per_item: f64,
    /// Redis server CPU time (user + system, `INFO cpu`) per item, in microseconds: the
    /// share of one Redis core an item takes, so `1e6 / redis_cpu_us_per_item` is the rate
    /// one Redis could sustain for this work if nothing else limited it.
    pub redis_cpu_us_per_item: f64,
    /// CPU time (user + system) of the bench process per item, in microseconds: the
    /// worker under test runs in it, so this is the worker's cost of an item (the bench's own
    /// polling is a few calls per scenario).
    pub client_cpu_us_per_item: f64,
}

/// A connection for the bench's own reads (INFO, polling, cleanup).
pub(crate) async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Counts of commands by name (`INFO commandstats`).
async fn command_counts(conn: &mut MultiplexedConnection) -> anyhow::Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_")
            && let Some((name, stats)) = rest.split_once(':')
            && let Some(calls) = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))
        {
            out.insert(name.to_string(), calls.parse().unwrap_or(0));
        }
    }
    Ok(out)
}

/// Redis's CPU time so far (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), in seconds.
async fn cpu_seconds(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("INFO cpu has no {name}"))
    };
    Ok(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}

/// CPU time (user + system, all threads) of this process so far, in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms); 0 where that file does not exist.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Measures the Redis work of one scenario: started just before it (command counters
/// reset, CPU times read), finished just after.
pub(crate) struct Meter {
    cpu: f64,
    client_cpu: f64,
}

impl Meter {
    pub(crate) async fn start(conn: &mut MultiplexedConnection) -> anyhow::Result<Meter> {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(conn)
            .await?;
        Ok(Meter {
            cpu: cpu_seconds(conn).await?,
            client_cpu: process_cpu_seconds(),
        })
    }

    /// The cost per item of the work since [`Meter::start`], leaving out the bench's own
    /// commands: `INFO`/`CONFIG` and `own` further calls of the named commands.
    pub(crate) async fn finish(
        self,
        conn: &mut MultiplexedConnection,
        own: &BTreeMap<&str, u64>,
        items: usize,
    ) -> anyhow::Result<RedisCost> {
        let client_cpu = process_cpu_seconds() - self.client_cpu;
        let cpu = cpu_seconds(conn).await? - self.cpu;
        let counts = command_counts(conn).await?;
        let mut cost = cost(&counts, own, cpu, items);
        cost.client_cpu_us_per_item = client_cpu.max(0.0) * 1e6 / items.max(1) as f64;
        Ok(cost)
    }
}

/// The cost per item of `counts` commands and `cpu` seconds of Redis CPU time, leaving out
/// the bench's own commands: `INFO`/`CONFIG` and `own` further calls of the named commands.
fn cost(
    counts: &BTreeMap<String, u64>,
    own: &BTreeMap<&str, u64>,
    cpu: f64,
    items: usize,
) -> RedisCost {
    let admin = |name: &str| name == "info" || name.starts_with("config");
    let script = |name: &str| name.starts_with("eval") || name.starts_with("fcall");
    let mut scripts = 0u64;
    let mut commands = 0u64;
    for (name, calls) in counts {
        if admin(name) {
            continue;
        }
        let calls = calls.saturating_sub(own.get(name.as_str()).copied().unwrap_or(0));
        if script(name) {
            scripts += calls;
        } else {
            commands += calls;
        }
    }
    let items = items.max(1) as f64;
    // Without scripts every command is a client call; with scripts, calls are counted as the
    // script invocations (the clients measured here run every state change in a script).
    let calls = if scripts == 0 { commands } else { scripts };
    RedisCost {
        calls_per_item: calls as f64 / items,
        commands_per_item: commands as f64 / items,
        redis_cpu_us_per_item: cpu.max(0.0) * 1e6 / items,
        client_cpu_us_per_item: 0.0,
    }
}

/// `used_memory` in bytes.
pub(crate) async fn used_memory(conn: &mut MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Deletes every key whose name contains `marker` on the node `conn` leads to (one `UNLINK`
/// per key, so that it works on a cluster node too, whose keys may be in different slots).
pub(crate) async fn delete_keys(
    conn: &mut MultiplexedConnection,
    marker: &str,
) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{marker}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("UNLINK").arg(key).ignore();
            }
            let () = pipe.query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Runs every scenario and returns the figures.
///
/// # Errors
/// Redis is unreachable, or a scenario fails.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run_id = format!("bench{}x{stamp}", std::process::id());
    let mut report = Report::default();
    sluice_side::run(options, &run_id, &mut report).await?;
    if options.apalis
        && let Err(e) = apalis_baseline::run(options, &run_id, &mut report).await
    {
        report.apalis_error = Some(format!("{e:#}"));
    }
    if options.redis_benchmark {
        report.redis_benchmark = report::redis_benchmark(&options.redis_url).await;
    }
    Ok(report)
}
