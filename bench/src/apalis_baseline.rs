//! The baseline: the published apalis-redis 1.0 worker with a no-op handler, with its
//! defaults and with the recommended settings (own `ConnectionManager` with a 5 s response
//! timeout, `batch_size` = concurrency, 5 s heartbeats, 3 missed heartbeats, no task locks,
//! no events, a 100 ms poll interval).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Mutex, Notify};

use crate::report::{ApalisRun, Report};
use crate::{Latency, Meter, Rate, connect, delete_keys, used_memory};

const CONCURRENCY: usize = 64;
const BULK_CHUNK: usize = 1_000;
/// The largest apalis-redis backlog: its fetch script unpacks every due task at once and
/// fails ("too many results to unpack") at about 8 000 due tasks.
pub(crate) const MAX_BACKLOG: usize = 5_000;
/// Pickup samples per configuration; fewer when a sample times out.
const PICKUP_SAMPLES: usize = 50;

/// What the handler reports: tasks run, and the instant each pickup sample was pushed.
#[derive(Default)]
struct Shared {
    done: AtomicUsize,
    target: AtomicUsize,
    finished: Notify,
    pushed: Mutex<Option<Instant>>,
    picked: Notify,
    pickup_ms: Mutex<Option<f64>>,
}

async fn handle(_task: u32, shared: Arc<Shared>) {
    if let Some(pushed) = shared.pushed.lock().await.take() {
        *shared.pickup_ms.lock().await = Some(pushed.elapsed().as_secs_f64() * 1000.0);
        shared.picked.notify_one();
    }
    let done = shared.done.fetch_add(1, Ordering::SeqCst) + 1;
    if done == shared.target.load(Ordering::SeqCst) {
        shared.finished.notify_one();
    }
}

fn config(queue: &str, recommended: bool) -> Config {
    let c = Config::default().queue(queue);
    if recommended {
        c.batch_size(CONCURRENCY)
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3)
            .lock_tasks(false)
            .emit_events(false)
            .persist_results(true)
    } else {
        c
    }
}

async fn storage(url: &str, queue: &str, recommended: bool) -> anyhow::Result<RedisStorage<u32>> {
    let conn = if recommended {
        let client = redis::Client::open(url)?;
        let cm = ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
        ConnectionManager::new_with_config(client, cm).await?
    } else {
        apalis_redis::connect(url).await?
    };
    Ok(RedisStorage::new(conn).with_config(config(queue, recommended)))
}

/// Pushes `n` tasks in `push_bulk` calls of 1 000.
async fn push_bulk(storage: &mut RedisStorage<u32>, n: usize) -> anyhow::Result<()> {
    let all: Vec<u32> = (0..u32::try_from(n)?).collect();
    for chunk in all.chunks(BULK_CHUNK) {
        storage
            .push_bulk(chunk.to_vec())
            .await
            .map_err(|e| anyhow::anyhow!("apalis push_bulk: {e}"))?;
    }
    Ok(())
}

/// Runs a worker over `$backend` until `$body` ends, then drops it.
macro_rules! with_worker {
    ($name:expr, $backend:expr, $shared:expr, $body:expr) => {{
        let shared = $shared.clone();
        let worker = WorkerBuilder::new($name)
            .backend($backend)
            .concurrency(CONCURRENCY)
            .catch_panic()
            .build(move |task: u32| {
                let shared = shared.clone();
                async move { handle(task, shared).await }
            });
        let run = worker.run();
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => anyhow::bail!("the apalis-redis worker stopped: {result:?}"),
            out = $body => out,
        }
    }};
}

pub(crate) async fn run(
    options: &crate::Options,
    run_id: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut conn = connect(&options.redis_url).await?;
    let n = options.jobs.min(MAX_BACKLOG);

    // Enqueue rates and memory per pending task (the recommended connection; enqueue does
    // not depend on the worker's settings).
    let queue = format!("{run_id}-apalis-enqueue");
    let mut s = storage(&options.redis_url, &queue, true).await?;
    let began = Instant::now();
    for i in 0..u32::try_from(n)? {
        s.push(i)
            .await
            .map_err(|e| anyhow::anyhow!("apalis push: {e}"))?;
    }
    report.apalis_enqueue_single = Some(Rate::new(n, began.elapsed(), false));
    delete_keys(&mut conn, &queue).await?;
    let before = used_memory(&mut conn).await?;
    let began = Instant::now();
    push_bulk(&mut s, n).await?;
    report.apalis_enqueue_bulk = Some(Rate::new(n, began.elapsed(), false));
    let after = used_memory(&mut conn).await?;
    report.apalis_memory_per_pending_job_bytes = Some((after - before) as f64 / n as f64);
    delete_keys(&mut conn, &queue).await?;

    for recommended in [false, true] {
        let settings = if recommended {
            "recommended"
        } else {
            "defaults"
        };
        let queue = format!("{run_id}-apalis-{settings}");
        let mut s = storage(&options.redis_url, &queue, recommended).await?;

        // Drain at concurrency 64, in rounds of at most MAX_BACKLOG tasks (each pushed, then
        // drained by a fresh worker, as sluice's drain starts its worker on a full queue)
        // until `--jobs` tasks have run; each round cut off at the cap.
        let rounds = options.jobs.div_ceil(n).max(1);
        let meter = Meter::start(&mut conn).await?;
        let mut elapsed = Duration::ZERO;
        let mut done = 0;
        let mut finished = true;
        for round in 0..rounds {
            push_bulk(&mut s, n).await?;
            let shared = Arc::new(Shared::default());
            shared.target.store(n, Ordering::SeqCst);
            let began = Instant::now();
            let name = format!("{queue}-drain{round}");
            let round_finished = {
                let shared = shared.clone();
                async move {
                    let done =
                        tokio::time::timeout(options.apalis_drain_cap, shared.finished.notified())
                            .await
                            .is_ok();
                    Ok::<bool, anyhow::Error>(done)
                }
            };
            let round_finished = if recommended {
                let backend = s.clone().poll_with_interval(Duration::from_millis(100));
                with_worker!(name, backend, shared, round_finished)?
            } else {
                with_worker!(name, s.clone(), shared, round_finished)?
            };
            elapsed += began.elapsed();
            done += shared.done.load(Ordering::SeqCst);
            if !round_finished {
                finished = false;
                break;
            }
        }
        let drain = Rate::new(done, elapsed, !finished);
        let redis = meter.finish(&mut conn, &BTreeMap::new(), done).await?;
        delete_keys(&mut conn, &queue).await?;

        // Idle pickup: one task at a time to an idle worker, each wait capped.
        let queue = format!("{run_id}-apalis-{settings}-pickup");
        let s = storage(&options.redis_url, &queue, recommended).await?;
        let shared = Arc::new(Shared::default());
        shared.target.store(usize::MAX, Ordering::SeqCst);
        let cap = options.apalis_pickup_cap;
        let samples = options.latency_samples.min(PICKUP_SAMPLES);
        let name = format!("{queue}-idle");
        let sampling = {
            let shared = shared.clone();
            let mut s = s.clone();
            async move {
                // Let the worker start and find the queue empty.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut got = Vec::new();
                let mut timed_out = 0;
                for i in 0..samples {
                    *shared.pushed.lock().await = Some(Instant::now());
                    s.push(u32::try_from(i)?)
                        .await
                        .map_err(|e| anyhow::anyhow!("apalis push: {e}"))?;
                    if tokio::time::timeout(cap, shared.picked.notified())
                        .await
                        .is_err()
                    {
                        // One sample over the cap says what the next ones would: stop here.
                        timed_out += 1;
                        break;
                    }
                    got.extend(shared.pickup_ms.lock().await.take());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<Latency, anyhow::Error>(Latency::of(got, timed_out, Some(cap)))
            }
        };
        let pickup = if recommended {
            let backend = s.clone().poll_with_interval(Duration::from_millis(100));
            with_worker!(name, backend, shared, sampling)?
        } else {
            with_worker!(name, s.clone(), shared, sampling)?
        };
        delete_keys(&mut conn, &queue).await?;
        report.apalis.push(ApalisRun {
            settings: settings.into(),
            drain,
            redis,
            pickup,
        });
    }
    Ok(())
}
