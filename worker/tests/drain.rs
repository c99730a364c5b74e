//! A 100 000-job backlog drains, and a job costs Redis the same at a 100 000 backlog as at a
//! 1 000 backlog (counted in Redis commands from `INFO commandstats`, so the check does not
//! depend on the machine's speed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_core::job::{NewJob, Outcome, kinds};
use sluice_core::{SystemClock, ids};
use sluice_store::engine::{Engine, Settled};
use sluice_store::{JobStart, Lane, Store, StoreConfig};
use sluice_testkit::redis::Commands;
use sluice_testkit::{RedisServer, wait_until};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "bulk";
const SAMPLE: usize = 1_000;
const BACKLOG: usize = 100_000;

async fn enqueue(engine: &Engine, n: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new(ids::new_id(ids::JOB, 0), QUEUE, kinds::NOOP, json!({ "i": i })))
        .collect();
    for chunk in jobs.chunks(10_000) {
        engine.store().enqueue(chunk, engine.now()).await.expect("enqueue");
    }
}

/// Redis work done by `f`: `(client round trips, commands executed including those run
/// inside scripts)`.
async fn measure<F: Future<Output = ()>>(store: &Store, f: F) -> (u64, u64) {
    store.reset_command_counts().await.expect("reset stats");
    f.await;
    let counts: BTreeMap<String, u64> = store.command_counts().await.expect("read stats");
    let admin = |name: &str| name == "info" || name == "config|resetstat" || name == "config";
    let round_trips: u64 = counts.iter().filter(|(k, _)| k.starts_with("eval")).map(|(_, v)| v).sum();
    let commands: u64 = counts.iter().filter(|(k, _)| !admin(k) && !k.starts_with("eval")).map(|(_, v)| v).sum();
    (round_trips, commands)
}

/// Leases, starts and completes `n` jobs the way a worker does, in batches of 64.
async fn lease_start_complete(engine: &Engine, n: usize) {
    let mut done = 0;
    while done < n {
        let now = engine.now();
        let batch = (n - done).min(64);
        let leased = engine.store().lease(0, QUEUE, Lane::Builtin, "drain-test", batch, now + 30_000, now, 100).await.expect("lease");
        assert!(!leased.jobs.is_empty(), "the backlog ran dry after {done} jobs");
        for mut job in leased.jobs {
            let token = job.lease.as_ref().expect("a leased job carries its lease").token.clone();
            let attempt = match engine.store().start(&job, &token, now + 30_000, now).await.expect("start") {
                JobStart::Started { attempt } => attempt,
                other => panic!("job {} not started: {other:?}", job.id),
            };
            job.attempts = attempt;
            let settled = engine.settle(&job, &token, &Outcome::Completed(json!(null)), None, 0).await.expect("settle");
            assert!(matches!(settled, Settled::Applied(_)), "{settled:?}");
            done += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_drain_and_cost_per_job_stays_flat() {
    let redis = RedisServer::start();
    let store = Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap();
    let engine = Engine::new(store.clone(), Arc::new(SystemClock));

    enqueue(&engine, SAMPLE).await;
    let small = measure(&store, lease_start_complete(&engine, SAMPLE)).await;

    enqueue(&engine, BACKLOG).await;
    let large = measure(&store, lease_start_complete(&engine, SAMPLE)).await;

    let per_job = |(trips, cmds): (u64, u64)| (trips as f64 / SAMPLE as f64, cmds as f64 / SAMPLE as f64);
    let (small_trips, small_cmds) = per_job(small);
    let (large_trips, large_cmds) = per_job(large);
    eprintln!(
        "per job at a {SAMPLE} backlog: {small_trips:.2} round trips, {small_cmds:.1} commands; \
         at a {BACKLOG} backlog: {large_trips:.2} round trips, {large_cmds:.1} commands"
    );
    assert!(small_cmds > 0.0 && small_trips > 0.0, "nothing was measured");
    assert!(large_cmds <= 2.0 * small_cmds, "commands per job grew with the backlog: {small_cmds} -> {large_cmds}");
    assert!(large_trips <= 2.0 * small_trips, "round trips per job grew with the backlog: {small_trips} -> {large_trips}");

    // The rest of the backlog drains through a real worker.
    let config = WorkerConfig { queues: vec![QUEUE.into()], concurrency: 64, ..WorkerConfig::default() };
    let worker = Worker::new(engine.clone(), config).unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let began = Instant::now();
    let handle = tokio::spawn(async move { worker.run(async move { s.cancelled().await }).await });
    let mut conn = redis.conn();
    let ready_key = format!("{{sluice:0}}:q:{QUEUE}:ready");
    wait_until(Duration::from_secs(600), "the backlog to drain", || {
        let ready: usize = conn.zcard(&ready_key).expect("ZCARD ready");
        let leased: usize = conn.zcard("{sluice:0}:leased").expect("ZCARD leased");
        std::future::ready((ready == 0 && leased == 0).then_some(()))
    })
    .await;
    let drained = BACKLOG - SAMPLE;
    eprintln!("{drained} jobs drained by one worker in {:.1} s", began.elapsed().as_secs_f64());
    stop.cancel();
    handle.await.unwrap();

    // Every job of both batches completed: none failed, none left pending.
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let keys: Vec<String> = conn.scan_match("{sluice:0}:job:*").expect("SCAN").collect::<Result<_, _>>().expect("SCAN");
    for chunk in keys.chunks(1_000) {
        let mut pipe = sluice_testkit::redis::pipe();
        for k in chunk {
            pipe.hget(k, "status");
        }
        let got: Vec<String> = pipe.query(&mut conn).expect("HGET statuses");
        for s in got {
            *statuses.entry(s).or_default() += 1;
        }
    }
    assert_eq!(statuses, BTreeMap::from([("completed".to_string(), SAMPLE + BACKLOG)]));
}
