//! Horizontal workers, with the real binary: four `sluice worker` processes of equal
//! concurrency on one queue share a backlog of short command jobs (none runs more than 40% of
//! them), and a fifth started mid-run starts its first job within a second of being ready.
//!
//! Who ran what comes from the `job.started` events, which name the lease holder (`worker`);
//! a worker is ready at its `worker started` log line, written once it reached Redis and
//! before its first lease attempt.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{RawEvent, Setup, events, shards, tag};
use serde_json::{Value, json};
use sluice_core::ids;
use sluice_core::job::NewJob;
use sluice_testkit::{RawConn, wait_until};

/// Jobs in the backlog.
const JOBS: usize = 480;
/// Worker processes at the start.
const WORKERS: usize = 4;
/// The most any worker may run of the backlog.
const MAX_SHARE: f64 = 0.40;
/// The longest the fifth worker may take from ready to its first start.
const PICKUP: Duration = Duration::from_secs(1);

/// The `worker started` line of `name`'s log: its worker id and the time it was logged
/// (Unix milliseconds).
fn started_line(setup: &Setup, name: &str) -> Option<(String, i64)> {
    let text = std::fs::read_to_string(setup.log(name)).ok()?;
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        if v["message"] != "worker started" {
            return None;
        }
        let id = v["worker.id"].as_str()?.to_string();
        let at: jiff::Timestamp = v["timestamp"].as_str()?.parse().ok()?;
        Some((id, at.as_millisecond()))
    })
}

/// The `job.started` events of the stream with their Redis time (the stream id's
/// milliseconds, from the same clock as the logs).
fn starts(conn: &mut RawConn) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for shard in 0..shards(conn) {
        let reply: sluice_testkit::redis::streams::StreamRangeReply =
            sluice_testkit::redis::Commands::xrange_all(conn, format!("{}:events", tag(shard)))
                .expect("XRANGE events");
        out.extend(reply.ids.iter().filter_map(|entry| {
            let kind: String = entry.get("type")?;
            if kind != "job.started" {
                return None;
            }
            let data: String = entry.get("data")?;
            let data: Value = serde_json::from_str(&data).ok()?;
            let at: i64 = entry.id.split('-').next()?.parse().ok()?;
            Some((data["worker"].as_str().unwrap_or("").to_string(), at))
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_a_queue_and_a_fifth_picks_up_work_within_a_second() {
    let setup = Setup::new("concurrency = 4\nlease_ttl = \"10s\"\nidle_poll = \"1s\"");
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|i| setup.spawn("worker", &format!("worker-{i}")))
        .collect();
    let mut ids_of = Vec::new();
    for i in 0..WORKERS {
        let name = format!("worker-{i}");
        let (id, _) = wait_until(Duration::from_secs(30), "a worker to start", || async {
            started_line(&setup, &name)
        })
        .await;
        ids_of.push(id);
    }

    let engine = setup.engine().await;
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|_| {
            let mut job = NewJob::new(
                ids::new_id(ids::JOB, 0),
                "default",
                "command",
                json!({ "run": ["sleep", "0.1"] }),
            );
            job.retry.max_attempts = 1;
            job
        })
        .collect();
    engine
        .store()
        .enqueue(&jobs, engine.now())
        .await
        .expect("enqueue the backlog");

    // Mid-run: once a quarter of the backlog has started, a fifth worker joins.
    wait_until(
        Duration::from_secs(60),
        "a quarter of the backlog to start",
        || async { (starts(&mut setup.raw()).len() >= JOBS / 4).then_some(()) },
    )
    .await;
    workers.push(setup.spawn("worker", "worker-4"));
    let (fifth, ready_at) = wait_until(
        Duration::from_secs(30),
        "the fifth worker to start",
        || async { started_line(&setup, "worker-4") },
    )
    .await;
    let first = wait_until(
        Duration::from_secs(30),
        "the fifth worker's first job",
        || async {
            starts(&mut setup.raw())
                .into_iter()
                .find(|(w, _)| *w == fifth)
                .map(|(_, at)| at)
        },
    )
    .await;
    let backlog_left = JOBS - starts(&mut setup.raw()).len();

    wait_until(
        Duration::from_secs(120),
        "every job to complete",
        || async {
            let stream: Vec<RawEvent> = events(&mut setup.raw());
            (stream.iter().filter(|e| e.kind == "job.completed").count() == JOBS).then_some(())
        },
    )
    .await;

    let all = starts(&mut setup.raw());
    assert_eq!(all.len(), JOBS, "one start per job");
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for (w, _) in &all {
        *per_worker.entry(w.as_str()).or_default() += 1;
    }
    let shares: Vec<(usize, usize)> = ids_of
        .iter()
        .chain([&fifth])
        .enumerate()
        .map(|(i, id)| (i, per_worker.get(id.as_str()).copied().unwrap_or(0)))
        .collect();
    let known: usize = shares.iter().map(|(_, n)| n).sum();
    assert_eq!(
        known, JOBS,
        "jobs started by no known worker: {per_worker:?}"
    );
    eprintln!(
        "scale-out: jobs per worker {shares:?}; the fifth started its first job {} ms after its start line, \
         with {backlog_left} jobs not started yet",
        first - ready_at
    );
    for (i, n) in &shares[..WORKERS] {
        let share = *n as f64 / JOBS as f64;
        assert!(
            share <= MAX_SHARE,
            "worker-{i} ran {n} of {JOBS} jobs ({:.0}%): {shares:?}",
            share * 100.0
        );
        assert!(*n > 0, "worker-{i} ran nothing: {shares:?}");
    }
    assert!(
        shares[WORKERS].1 > 0,
        "the fifth worker ran nothing: {shares:?}"
    );
    let pickup = first - ready_at;
    assert!(
        pickup <= i64::try_from(PICKUP.as_millis()).expect("small"),
        "the fifth worker started its first job {pickup} ms after it was ready (at most {PICKUP:?}):\n{}",
        setup.log_tail("worker-4", 20)
    );
    for w in &mut workers {
        w.kill();
    }
}
