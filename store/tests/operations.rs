//! Operator reads and controls against a real `redis-server`: queue figures, pause and
//! resume, the worker registry, execution listings with cursors, and event cursors.

use serde_json::json;
use sluice_core::execution::StartRequest;
use sluice_core::ids;
use sluice_core::job::{NewJob, Settlement, kinds};
use sluice_core::{ExecutionStatus, RetryPolicy, pipeline};
use sluice_store::{
    CancelOutcome, EventCursor, ExecutionFilter, JobStart, Lane, ListCursor, StartOutcome, Store, StoreConfig, WorkerInfo,
};
use sluice_testkit::RedisServer;

const T0: i64 = 1_700_000_000_000;

async fn store(redis: &RedisServer, shards: u32) -> Store {
    Store::connect(StoreConfig { url: redis.url(), shards, ..StoreConfig::default() }).await.unwrap()
}

fn job(queue: &str, run_at: Option<i64>) -> NewJob {
    NewJob {
        id: ids::new_id(ids::JOB, 0),
        queue: queue.into(),
        kind: kinds::NOOP.into(),
        payload: json!(null),
        priority: 0,
        retry: RetryPolicy::default(),
        timeout_ms: None,
        run_at,
        dedupe_key: None,
        execution_id: None,
        step: None,
    }
}

#[tokio::test]
async fn queue_stats_count_every_state_and_the_oldest_waiting_job() {
    let redis = RedisServer::start();
    let store = store(&redis, 1).await;
    let jobs: Vec<NewJob> = (0..4).map(|_| job("build", None)).collect();
    store.enqueue(&jobs, T0).await.unwrap();
    store.enqueue(&[job("build", Some(T0 + 60_000)), job("deploy", None)], T0 + 1_000).await.unwrap();

    // One job runs and completes, one runs, one sits reserved, one is cancelled.
    let leased = store.lease(0, "build", Lane::Builtin, "w1", 3, T0 + 30_000, T0 + 2_000, 10).await.unwrap();
    assert_eq!(leased.jobs.len(), 3);
    for j in &leased.jobs[..2] {
        let token = &j.lease.as_ref().unwrap().token;
        assert_eq!(store.start(j, token, T0 + 30_000, T0 + 2_000).await.unwrap(), JobStart::Started { attempt: 1 });
    }
    let mut done = store.get_job(&leased.jobs[0].id).await.unwrap().unwrap();
    done.attempts = 1;
    let token = leased.jobs[0].lease.as_ref().unwrap().token.clone();
    let settlement = Settlement::Completed { output: json!(1) };
    store
        .settle(&done, &token, &settlement, &sluice_core::execution::Plan::default(), None, 0, None, T0 + 3_000)
        .await
        .unwrap();
    let waiting = store.get_job(&jobs[3].id).await.unwrap().unwrap();
    assert_eq!(
        store.cancel(&waiting, &sluice_core::execution::Plan::default(), None, T0 + 3_000).await.unwrap(),
        CancelOutcome::Cancelled
    );

    let worker = WorkerInfo {
        id: "w1".into(),
        queues: vec!["build".into()],
        concurrency: 4,
        host: "h".into(),
        pid: 1,
        started_at: T0,
        version: "0".into(),
        last_seen: T0 + 4_000,
    };
    store.register_worker(&worker, 60_000).await.unwrap();

    let stats = store.queue_stats(None, T0 + 5_000, 10_000).await.unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, ["build", "deploy"]);
    let build = &stats[0];
    assert_eq!(
        (build.ready, build.delayed, build.reserved, build.running, build.completed, build.cancelled),
        (0, 1, 1, 1, 1, 1),
        "{build:?}"
    );
    assert_eq!(build.oldest_ready_age_ms, None, "nothing of build waits in its ready set");
    assert_eq!(build.workers, ["w1"]);
    let deploy = &stats[1];
    assert_eq!(deploy.ready, 1);
    assert_eq!(deploy.oldest_ready_age_ms, Some(4_000));
    assert!(deploy.workers.is_empty());
    // A worker not heard from recently is not live.
    let stale = store.queue_stats(Some("build"), T0 + 60_000, 10_000).await.unwrap();
    assert!(stale[0].workers.is_empty());
}

#[tokio::test]
async fn a_paused_queue_hands_out_nothing_until_resumed() {
    let redis = RedisServer::start();
    let store = store(&redis, 2).await;
    store.enqueue(&[job("q", None)], T0).await.unwrap();
    store.set_queue_paused("q", true).await.unwrap();
    assert!(store.lease(0, "q", Lane::Builtin, "w", 5, T0 + 1_000, T0, 10).await.unwrap().jobs.is_empty());
    let stats = store.queue_stats(Some("q"), T0, 1_000).await.unwrap();
    assert!(stats[0].paused);
    assert_eq!(stats[0].ready, 1, "pausing keeps the jobs");
    store.set_queue_paused("q", false).await.unwrap();
    assert_eq!(store.lease(0, "q", Lane::Builtin, "w", 5, T0 + 1_000, T0, 10).await.unwrap().jobs.len(), 1);
    assert!(!store.queue_stats(Some("q"), T0, 1_000).await.unwrap()[0].paused);
}

#[tokio::test]
async fn listings_page_with_cursors_and_filter_through_the_indexes() {
    let redis = RedisServer::start();
    let store = store(&redis, 2).await;
    let p = pipeline::parse_toml("id = \"p\"\n[[steps]]\nname = \"a\"\nkind = \"noop\"").unwrap();
    let q = pipeline::parse_toml("id = \"q\"\n[[steps]]\nname = \"a\"\nkind = \"noop\"").unwrap();
    store.put_pipeline(&p, T0).await.unwrap();
    store.put_pipeline(&q, T0).await.unwrap();
    let mut started = Vec::new();
    for i in 0..7 {
        let pipeline = if i % 3 == 0 { q.clone() } else { p.clone() };
        let target = (i < 2).then(|| format!("svc:{i}"));
        let req = StartRequest { pipeline, pipeline_version: 1, input: json!({}), target, idempotency_key: None };
        // Two executions share a creation time, to exercise the cursor's tie-break.
        match store.start_execution(req, T0 + i64::from(i.min(5))).await.unwrap() {
            StartOutcome::Started(e) => started.push(e.id),
            other => panic!("{other:?}"),
        }
    }
    // Newest first, three at a time, across both shards, every execution exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    loop {
        let page = store.list_executions(&ExecutionFilter::default(), cursor.as_ref(), 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|e| (e.created_at, e.id.clone())));
        match page.next_cursor {
            Some(c) => cursor = Some(ListCursor::parse(&c).expect("a cursor we made parses")),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let of_q = store
        .list_executions(&ExecutionFilter { pipeline: Some("q".into()), ..ExecutionFilter::default() }, None, 50)
        .await
        .unwrap();
    assert_eq!(of_q.items.len(), 3);
    assert!(of_q.next_cursor.is_none());
    let on_target = store
        .list_executions(&ExecutionFilter { target: Some("svc:1".into()), ..ExecutionFilter::default() }, None, 50)
        .await
        .unwrap();
    assert_eq!(on_target.items.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [started[1].clone()]);
    let running = store
        .list_executions(
            &ExecutionFilter { status: Some(ExecutionStatus::Running), pipeline: Some("p".into()), ..ExecutionFilter::default() },
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(running.items.len(), 4);
    let completed = store
        .list_executions(&ExecutionFilter { status: Some(ExecutionStatus::Completed), ..ExecutionFilter::default() }, None, 50)
        .await
        .unwrap();
    assert!(completed.items.is_empty());
}

#[tokio::test]
async fn event_cursors_resume_after_the_last_event_seen() {
    let redis = RedisServer::start();
    let store = store(&redis, 1).await;
    store.enqueue(&[job("a", None), job("a", None)], T0).await.unwrap();
    let first = store.read_events(&EventCursor::start(1), 100).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|e| e.kind == "job.enqueued"));
    let after = EventCursor::parse(&first[1].id, 1).unwrap();
    assert!(store.read_events(&after, 100).await.unwrap().is_empty());
    store.enqueue(&[job("a", None)], T0).await.unwrap();
    let later = store.read_events(&after, 100).await.unwrap();
    assert_eq!(later.len(), 1);
    let mut reader = store.event_reader().await.unwrap();
    let none = reader.read(&EventCursor::parse(&later[0].id, 1).unwrap(), 10, 50).await.unwrap();
    assert!(none.is_empty(), "a blocking read with nothing new times out empty");
    assert!(EventCursor::parse("1-0,2-0", 1).unwrap_err().contains("one per shard"));
    assert!(EventCursor::parse("abc", 1).unwrap_err().contains("not a stream id"));
}

#[tokio::test]
async fn the_latest_cursor_starts_after_every_event_already_stored() {
    let redis = RedisServer::start();
    let store = store(&redis, 2).await;
    assert_eq!(store.latest_event_cursor().await.unwrap().to_string(), "0-0,0-0", "empty streams");
    let in_shard = |shard: u32| NewJob { id: ids::new_id(ids::JOB, shard), ..job("a", None) };
    store.enqueue(&[in_shard(0), in_shard(1), in_shard(1)], T0).await.unwrap();
    assert_eq!(store.read_events(&EventCursor::parse("0", 2).unwrap(), 100).await.unwrap().len(), 3, "`0` is the start");

    let latest = store.latest_event_cursor().await.unwrap();
    let mut ends = Vec::new();
    for shard in 0..2 {
        ends.push(store.stream_range(shard, "-", "+").await.unwrap().last().unwrap().id.clone());
    }
    assert_eq!(latest.to_string(), ends.join(","), "the newest entry of each shard");
    assert!(store.read_events(&latest, 100).await.unwrap().is_empty());

    store.enqueue(&[in_shard(1)], T0).await.unwrap();
    let new = store.read_events(&latest, 100).await.unwrap();
    assert_eq!(new.len(), 1, "only what came after: {new:?}");
    assert!(new[0].id.starts_with(&format!("{},", ends[0])), "shard 0 stays where it was: {}", new[0].id);
}

#[tokio::test]
async fn a_blocking_read_waits_longer_than_a_response_timeout_and_wakes_on_a_new_event() {
    let redis = RedisServer::start();
    let store = Store::connect(StoreConfig {
        url: redis.url(),
        response_timeout: std::time::Duration::from_millis(200),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let mut reader = store.event_reader().await.unwrap();
    let latest = store.latest_event_cursor().await.unwrap();
    let started = std::time::Instant::now();
    assert!(reader.read(&latest, 10, 700).await.unwrap().is_empty(), "nothing arrived");
    assert!(started.elapsed() >= std::time::Duration::from_millis(600), "it waited: {:?}", started.elapsed());

    let writer = store.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        writer.enqueue(&[job("a", None)], T0).await.unwrap();
    });
    let started = std::time::Instant::now();
    let woken = reader.read(&latest, 10, 10_000).await.unwrap();
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0].kind, "job.enqueued");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "woken by the event: {:?}", started.elapsed());
    late.await.unwrap();
}
