//! The sluice scenarios: enqueue, drain, idle pickup, 5-step pipelines, Redis cost.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::json;
use sluice_core::execution::StartRequest;
use sluice_core::job::{NewJob, kinds};
use sluice_core::{SystemClock, ids, pipeline};
use sluice_store::engine::Engine;
use sluice_store::{Lane, StartOutcome, Store, StoreConfig};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::report::{Drain, Pipelines, Report};
use crate::{Latency, Meter, Rate, connect, delete_keys, used_memory};

const QUEUE: &str = "bench";
const BULK_CHUNK: usize = 1_000;
const POLL: Duration = Duration::from_millis(5);

fn noop_job(i: usize) -> NewJob {
    NewJob::new(
        ids::new_id(ids::JOB, 0),
        QUEUE,
        kinds::NOOP,
        json!({ "i": i }),
    )
}

async fn engine(url: &str, prefix: &str) -> anyhow::Result<Engine> {
    let store = Store::connect(StoreConfig {
        url: url.into(),
        prefix: prefix.into(),
        ..StoreConfig::default()
    })
    .await?;
    Ok(Engine::new(store, Arc::new(SystemClock)))
}

fn spawn_worker(
    engine: &Engine,
    concurrency: usize,
) -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    let config = WorkerConfig {
        queues: vec![QUEUE.into()],
        concurrency,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(engine.clone(), config)?;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move { worker.run(async move { s.cancelled().await }).await });
    Ok((stop, handle))
}

async fn stop_worker(
    (stop, handle): (CancellationToken, tokio::task::JoinHandle<()>),
) -> anyhow::Result<()> {
    stop.cancel();
    handle.await?;
    Ok(())
}

/// Polls `check` every few milliseconds until it holds; returns how many polls it took.
async fn poll_until<F, Fut>(mut check: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut polls = 0;
    loop {
        polls += 1;
        if check().await? {
            return Ok(polls);
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn run(
    options: &crate::Options,
    run_id: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut conn = connect(&options.redis_url).await?;
    let n = options.jobs;

    // 1. Enqueue, one job per call.
    let prefix = format!("{run_id}-enqueue");
    let e = engine(&options.redis_url, &prefix).await?;
    let began = Instant::now();
    for i in 0..n {
        e.store().enqueue(&[noop_job(i)], e.now()).await?;
    }
    report.enqueue_single = Some(Rate::new(n, began.elapsed(), false));
    delete_keys(&mut conn, &prefix).await?;

    // 1. Enqueue in bulk, and the memory a pending job takes.
    let jobs: Vec<NewJob> = (0..n).map(noop_job).collect();
    let before = used_memory(&mut conn).await?;
    let began = Instant::now();
    for chunk in jobs.chunks(BULK_CHUNK) {
        e.store().enqueue(chunk, e.now()).await?;
    }
    report.enqueue_bulk = Some(Rate::new(n, began.elapsed(), false));
    let after = used_memory(&mut conn).await?;
    report.memory_per_pending_job_bytes = Some((after - before) as f64 / n as f64);
    delete_keys(&mut conn, &prefix).await?;

    // 2. and 5. Drain at each concurrency, with its Redis cost.
    for &concurrency in &options.concurrencies {
        let label = format!("drain{concurrency}");
        report
            .drain
            .push(drain(options, run_id, &label, &mut conn, concurrency, n).await?);
    }
    // 5. Drain at each backlog, at concurrency 64: the cost per job must not grow with it.
    for &backlog in &options.backlogs {
        let label = format!("backlog{backlog}");
        report
            .backlog_drain
            .push(drain(options, run_id, &label, &mut conn, 64, backlog).await?);
    }

    // 3. Idle pickup latency: enqueue → the job's start, one job at a time.
    let prefix = format!("{run_id}-pickup");
    let e = engine(&options.redis_url, &prefix).await?;
    let worker = spawn_worker(&e, 16)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::with_capacity(options.latency_samples);
    for i in 0..options.latency_samples {
        let job = noop_job(i);
        let id = job.id.clone();
        let enqueued_at = e.now();
        e.store().enqueue(&[job], enqueued_at).await?;
        let started_at = loop {
            if let Some(started) = e.store().get_job(&id).await?.and_then(|j| j.started_at) {
                break started;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        samples.push(started_at.saturating_sub(enqueued_at) as f64);
        // Let the worker go back to waiting, so the next job finds it idle.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_worker(worker).await?;
    report.pickup = Some(Latency::of(samples, 0, None));
    delete_keys(&mut conn, &prefix).await?;

    // 4. and 5. 5-step noop pipelines at concurrency 64.
    report.pipelines = Some(pipelines(options, run_id, &mut conn).await?);
    Ok(())
}

/// Enqueues `backlog` no-op jobs, then times one worker at `concurrency` draining them.
async fn drain(
    options: &crate::Options,
    run_id: &str,
    label: &str,
    conn: &mut MultiplexedConnection,
    concurrency: usize,
    backlog: usize,
) -> anyhow::Result<Drain> {
    let prefix = format!("{run_id}-{label}");
    let e = engine(&options.redis_url, &prefix).await?;
    let mut enqueued = 0;
    while enqueued < backlog {
        let chunk: Vec<NewJob> = (enqueued..backlog.min(enqueued + BULK_CHUNK))
            .map(noop_job)
            .collect();
        e.store().enqueue(&chunk, e.now()).await?;
        enqueued += chunk.len();
    }
    let ready = e.store().keys().ready(0, QUEUE, Lane::Builtin);
    let leased = e.store().keys().leased(0);
    let meter = Meter::start(conn).await?;
    let began = Instant::now();
    let worker = spawn_worker(&e, concurrency)?;
    let polls = poll_until(|| drained(conn.clone(), &ready, &leased)).await?;
    let elapsed = began.elapsed();
    let own = BTreeMap::from([("zcard", 2 * polls)]);
    let redis = meter.finish(conn, &own, backlog).await?;
    stop_worker(worker).await?;
    let result = Drain {
        concurrency,
        backlog,
        rate: Rate::new(backlog, elapsed, false),
        redis,
    };
    delete_keys(conn, &prefix).await?;
    Ok(result)
}

async fn drained(
    mut conn: MultiplexedConnection,
    ready: &str,
    leased: &str,
) -> anyhow::Result<bool> {
    let (r, l): (u64, u64) = redis::pipe()
        .zcard(ready)
        .zcard(leased)
        .query_async(&mut conn)
        .await?;
    Ok(r == 0 && l == 0)
}

const PIPELINE: &str = r#"
id = "bench-noop5"
[[steps]]
name = "s1"
kind = "noop"
queue = "bench"
[[steps]]
name = "s2"
kind = "noop"
queue = "bench"
[[steps]]
name = "s3"
kind = "noop"
queue = "bench"
[[steps]]
name = "s4"
kind = "noop"
queue = "bench"
[[steps]]
name = "s5"
kind = "noop"
queue = "bench"
"#;

async fn pipelines(
    options: &crate::Options,
    run_id: &str,
    conn: &mut MultiplexedConnection,
) -> anyhow::Result<Pipelines> {
    let prefix = format!("{run_id}-pipelines");
    let e = engine(&options.redis_url, &prefix).await?;
    let p = pipeline::parse_toml(PIPELINE)
        .map_err(|problems| anyhow::anyhow!("bench pipeline: {problems:?}"))?;
    let (version, _) = e.store().put_pipeline(&p, e.now()).await?;
    let executions = options.pipelines;
    for _ in 0..executions {
        let req = StartRequest {
            pipeline: p.clone(),
            pipeline_version: version,
            input: json!({}),
            target: None,
            idempotency_key: None,
        };
        match e.store().start_execution(req, e.now()).await? {
            StartOutcome::Started(_) => {}
            other => anyhow::bail!("a bench execution did not start: {other:?}"),
        }
    }
    let meter = Meter::start(conn).await?;
    let began = Instant::now();
    let worker = spawn_worker(&e, 64)?;
    let ready = e.store().keys().ready(0, QUEUE, Lane::Builtin);
    let leased = e.store().keys().leased(0);
    // A step's settle enqueues the next step in the same script, so an empty queue with
    // nothing leased means every execution has finished.
    let polls = poll_until(|| drained(conn.clone(), &ready, &leased)).await?;
    let elapsed = began.elapsed();
    let own = BTreeMap::from([("zcard", 2 * polls)]);
    let redis_per_step = meter.finish(conn, &own, executions * 5).await?;
    stop_worker(worker).await?;
    let ended = e.store().execution_counts().await?;
    let completed = ended
        .iter()
        .find(|(s, _)| *s == sluice_core::ExecutionStatus::Completed)
        .map_or(0, |(_, n)| *n);
    anyhow::ensure!(
        completed == executions as u64,
        "{completed} of {executions} bench executions completed: {ended:?}"
    );
    let steps = executions * 5;
    let result = Pipelines {
        steps: Rate::new(steps, elapsed, false),
        executions: Rate::new(executions, elapsed, false),
        redis_per_step,
    };
    delete_keys(conn, &prefix).await?;
    Ok(result)
}
