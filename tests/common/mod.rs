//! Shared pieces of the end-to-end tests: a private Redis, a config file pointing at it, the
//! real `sluice` binary as child processes and as the CLI, and raw reads of the Redis keys
//! that the invariant checks use (deliberately not through the store crate under test).
//!
//! `SLUICE_TEST_REDIS=cluster` runs every test built on [`Setup::new`] against a private
//! Redis Cluster of 3 masters with `redis.shards = 8` instead of one server; the raw reads
//! below look at every shard, so the same assertions hold in both modes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_core::execution::StartRequest;
use sluice_core::{Execution, SystemClock, ids, pipeline};
use sluice_store::engine::Engine;
use sluice_store::{StartOutcome, Store, StoreConfig};
use sluice_testkit::process::Child;
use sluice_testkit::redis::{self, Commands};
use sluice_testkit::{CLUSTER_SHARDS, RawConn, RedisCluster, RedisServer, TestRedis, wait_until};

/// A private Redis (one server, or a cluster with `SLUICE_TEST_REDIS=cluster`), a scratch
/// directory and a config file for the binary.
pub struct Setup {
    pub redis: TestRedis,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Starts Redis (see [`TestRedis::from_env`]) and writes `sluice.toml` with `worker` as
    /// the `[worker]` section body.
    pub fn new(worker: &str) -> Setup {
        Setup::on(TestRedis::from_env(false), worker)
    }

    /// As [`Setup::new`], with Redis persisted in an fsync-always AOF (data survives a
    /// kill and restart of Redis).
    pub fn with_aof(worker: &str) -> Setup {
        Setup::on(TestRedis::from_env(true), worker)
    }

    /// As [`Setup::new`], always on a Redis Cluster of `masters` masters with
    /// `redis.shards = 8`, whatever `SLUICE_TEST_REDIS` says; with `aof`, every node
    /// persisted in an fsync-always AOF.
    pub fn cluster(masters: usize, aof: bool, worker: &str) -> Setup {
        let cluster = if aof {
            RedisCluster::start_with_aof(masters)
        } else {
            RedisCluster::start(masters)
        };
        Setup::on(TestRedis::Cluster(cluster), worker)
    }

    /// As [`Setup::with_aof`], always on one `redis-server` whatever `SLUICE_TEST_REDIS`
    /// says: for tests that stop, hang or count the connections of that one process.
    pub fn single_with_aof(worker: &str) -> Setup {
        Setup::on(TestRedis::Single(RedisServer::start_with_aof()), worker)
    }

    /// The one `redis-server` of a [`Setup::single_with_aof`] deployment.
    pub fn server(&self) -> &RedisServer {
        match &self.redis {
            TestRedis::Single(server) => server,
            TestRedis::Cluster(_) => panic!("this test needs a single redis-server, not a cluster"),
        }
    }

    fn on(redis: TestRedis, worker: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("sluice.toml");
        let text = format!(
            "[redis]\n{}\n[worker]\n{worker}\n\n[scheduler]\ntick = \"200ms\"\n\n[log]\nfilter = \"info\"\nformat = \"json\"\n",
            redis.config_toml()
        );
        std::fs::write(&config, text).expect("write config");
        Setup { redis, dir, config }
    }

    /// The store settings of the config file's `[redis]` section.
    pub fn store_config(&self) -> StoreConfig {
        let urls: Vec<String> = self.redis.servers().iter().map(|s| s.url()).collect();
        StoreConfig {
            url: urls[0].clone(),
            cluster: self.redis.is_cluster(),
            seeds: urls[1..].to_vec(),
            shards: self.redis.shards(),
            ..StoreConfig::default()
        }
    }

    /// Appends `extra` (more sections, such as `[api]` and `[auth]`) to the config file.
    pub fn append(&self, extra: &str) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.config)
            .expect("config file");
        writeln!(file, "\n{extra}").expect("append to the config");
    }

    /// The log file of the process called `name` (every restart appends to it).
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts `sluice <role> --config …`, its output appended to `name`'s log.
    pub fn spawn(&self, role: &str, name: &str) -> Child {
        self.spawn_env(role, name, &[])
    }

    /// As [`Setup::spawn`], with extra environment variables.
    pub fn spawn_env(&self, role: &str, name: &str, env: &[(&str, &str)]) -> Child {
        self.spawn_with(role, name, &[], env)
    }

    /// As [`Setup::spawn`], with extra arguments after the config and extra environment
    /// variables.
    pub fn spawn_with(&self, role: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg(role)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        Child::spawn(&mut cmd)
    }

    /// The last `lines` lines of `name`'s log, for failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An engine on the same Redis, for starting and reading executions.
    pub async fn engine(&self) -> Engine {
        let store = Store::connect(self.store_config()).await.expect("connect");
        Engine::new(store, Arc::new(SystemClock))
    }

    /// A blocking raw connection for invariant checks (routed by key on a cluster).
    pub fn raw(&self) -> RawConn {
        self.redis.conn()
    }
}

/// Runs `sluice args` to its end, without the CLI's settings from the environment
/// (`SLUICE_API_URL`, `SLUICE_TOKEN`) unless `env` gives them.
pub fn sluice(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_API_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the CLI")
}

/// Runs the CLI against the API at `api` (given as `SLUICE_API_URL`, so that it works after
/// a `--`) with `args`, without any token from the environment unless `env` gives one.
pub fn cli(api: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let env: Vec<(&str, &str)> = [("SLUICE_API_URL", api)]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    sluice(args, &env)
}

/// The standard output of a CLI run, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The standard error of a CLI run, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An HTTP client for the tests, with the TLS setup the binary uses (a bare
/// `reqwest::Client::new()` has no crypto provider to build with).
pub fn http_client() -> reqwest::Client {
    let roots = sluice_worker::tls::Roots::load(None).expect("trusted roots");
    roots
        .client_builder()
        .expect("a client builder")
        .build()
        .expect("an HTTP client")
}

/// Waits until the API at `url` answers its liveness probe.
pub async fn wait_for_api(url: &str) {
    let healthz = format!("{url}/healthz");
    let client = http_client();
    wait_until(Duration::from_secs(15), "the api to answer", || async {
        client
            .get(&healthz)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// Applies `toml` and starts `n` executions of it with input `{"n": i}`; returns their ids.
pub async fn start_executions(engine: &Engine, toml: &str, n: usize) -> Vec<String> {
    let p = pipeline::parse_toml(toml).expect("pipeline parses");
    let (version, _) = engine
        .store()
        .put_pipeline(&p, engine.now())
        .await
        .expect("put pipeline");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let req = StartRequest {
            pipeline: p.clone(),
            pipeline_version: version,
            input: serde_json::json!({ "n": i }),
            target: None,
            idempotency_key: None,
        };
        match engine
            .store()
            .start_execution(req, engine.now())
            .await
            .expect("start")
        {
            StartOutcome::Started(e) => ids.push(e.id),
            other => panic!("unexpected start outcome {other:?}"),
        }
    }
    ids
}

/// Reads every execution; `None` entries are missing records.
pub async fn executions(engine: &Engine, ids: &[String]) -> Vec<Execution> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let e = engine
            .store()
            .get_execution(id)
            .await
            .expect("read execution");
        out.push(e.unwrap_or_else(|| panic!("execution {id} is missing")));
    }
    out
}

/// Waits until every execution is terminal (not live), at most `deadline`.
pub async fn wait_all_terminal(engine: &Engine, ids: &[String], deadline: Duration) {
    wait_until(deadline, "every execution to end", || async {
        let all = executions(engine, ids).await;
        all.iter().all(|e| !e.status.is_live()).then_some(())
    })
    .await;
}

/// One event of a shard's stream: its type and JSON data.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub kind: String,
    pub data: Value,
}

/// The number of shards of the deployment `conn` leads to: [`CLUSTER_SHARDS`] on a cluster
/// (as [`Setup`] configures it), 1 on one server.
pub fn shards(conn: &RawConn) -> u32 {
    match conn {
        RawConn::Cluster(_) => CLUSTER_SHARDS,
        RawConn::Single(_) => 1,
    }
}

/// The hash tag of `shard` under the default prefix.
pub fn tag(shard: u32) -> String {
    format!("{{sluice:{shard}}}")
}

/// Every event of every shard's stream (raw `XRANGE`), oldest first by stream id (the
/// events of one execution all live in its shard, in order).
pub fn events(conn: &mut RawConn) -> Vec<RawEvent> {
    let mut all: Vec<((u64, u64), RawEvent)> = Vec::new();
    for shard in 0..shards(conn) {
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_all(format!("{}:events", tag(shard)))
            .expect("XRANGE events");
        for entry in &reply.ids {
            let kind: String = entry.get("type").expect("event type");
            let data: String = entry.get("data").expect("event data");
            let (ms, seq) = entry.id.split_once('-').expect("a stream id");
            let order = (
                ms.parse().expect("stream id ms"),
                seq.parse().expect("stream id seq"),
            );
            all.push((
                order,
                RawEvent {
                    kind,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                },
            ));
        }
    }
    all.sort_by_key(|(order, _)| *order);
    all.into_iter().map(|(_, e)| e).collect()
}

/// How many times each `(execution_id, step)` has an event of `kind`.
pub fn count_per_step(events: &[RawEvent], kind: &str) -> HashMap<(String, u64), usize> {
    let mut counts = HashMap::new();
    for e in events.iter().filter(|e| e.kind == kind) {
        let exec = e.data["execution_id"]
            .as_str()
            .expect("execution_id")
            .to_string();
        let step = e.data["step"].as_u64().expect("step index");
        *counts.entry((exec, step)).or_insert(0) += 1;
    }
    counts
}

/// The members of the sorted set `<shard tag>:<suffix>` of every shard, shard by shard
/// (raw `ZRANGE`).
pub fn zrange_every_shard(conn: &mut RawConn, suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for shard in 0..shards(conn) {
        let key = format!("{}:{suffix}", tag(shard));
        let ids: Vec<String> = conn.zrange(&key, 0, -1).unwrap_or_else(|e| panic!("ZRANGE {key}: {e}"));
        out.extend(ids);
    }
    out
}

/// The ids of the jobs holding a lease or reservation, on every shard.
pub fn leased_ids(conn: &mut RawConn) -> Vec<String> {
    zrange_every_shard(conn, "leased")
}

/// Number of jobs holding a lease or reservation, on every shard.
pub fn leased_count(conn: &mut RawConn) -> usize {
    leased_ids(conn).len()
}

/// The ready job ids of `queue`'s builtin lane, on every shard.
pub fn ready_ids(conn: &mut RawConn, queue: &str) -> Vec<String> {
    zrange_every_shard(conn, &format!("q:{queue}:ready"))
}

/// The key of job `id`'s hash (in the shard its id names).
pub fn job_key(id: &str) -> String {
    let shard = ids::shard_of(id, ids::JOB).expect("a job id");
    format!("{}:job:{id}", tag(shard))
}

/// The `status` field of job `id` (raw `HGET`).
pub fn job_status(conn: &mut RawConn, id: &str) -> Option<String> {
    conn.hget(job_key(id), "status").expect("HGET job status")
}

/// Waits for `child` to exit, at most `timeout`; panics with `log` context otherwise.
pub async fn expect_exit(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    child
        .wait_timeout_async(timeout)
        .await
        .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?}"))
}

/// `path` as a string for messages.
pub fn show(path: &Path) -> String {
    path.display().to_string()
}
