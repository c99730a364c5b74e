//! Job semantics against a real `redis-server` started by the test kit.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::execution::Plan;
use sluice_core::ids;
use sluice_core::job::{JobError, JobStatus, NewJob, Settlement, kinds};
use sluice_core::retry::{Backoff, RetryPolicy};
use sluice_store::{CancelOutcome, EnqueueOutcome, JobStart, Lane, LeaseState, SettleOutcome, Store, StoreConfig};
use sluice_testkit::RedisServer;

const T0: i64 = 1_700_000_000_000;

async fn store(redis: &RedisServer) -> Store {
    Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap()
}

fn new_job(queue: &str) -> NewJob {
    NewJob {
        id: ids::new_id(ids::JOB, 0),
        queue: queue.into(),
        kind: kinds::NOOP.into(),
        payload: json!({"n": 1}),
        priority: 0,
        retry: RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed,
            initial_ms: 1_000,
            max_ms: 1_000,
            jitter: false,
        },
        timeout_ms: None,
        run_at: None,
        dedupe_key: None,
        execution_id: None,
        step: None,
    }
}

async fn events(redis: &RedisServer) -> Vec<(String, Value)> {
    let events = store(redis).await.stream_range(0, "-", "+").await.unwrap();
    events.into_iter().map(|e| (e.kind, e.data)).collect()
}

/// Starts job `id` as its worker would (with the record as leased).
async fn start(store: &Store, id: &str, token: &str, deadline: i64, now: i64) -> JobStart {
    let job = store.get_job(id).await.unwrap().expect("the job exists");
    store.start(&job, token, deadline, now).await.unwrap()
}

#[tokio::test]
async fn a_job_goes_from_enqueue_through_lease_and_start_to_completed() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    let out = store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    assert_eq!(out, vec![EnqueueOutcome::Created(job.id.clone())]);

    let leased = store.lease(0, "default", Lane::Builtin, "w1", 10, T0 + 30_000, T0, 100).await.unwrap();
    assert_eq!(leased.jobs.len(), 1);
    let held = &leased.jobs[0];
    assert_eq!(held.status, JobStatus::Pending, "a reservation stays pending until started");
    let token = held.lease.as_ref().unwrap().token.clone();
    assert_eq!(start(&store, &job.id, &token, T0 + 30_000, T0).await, JobStart::Started { attempt: 1 });
    // A start repeated under the same token (a retry after an answer lost to a Redis hang)
    // answers as the first did and changes nothing: no second attempt, no second event.
    assert_eq!(start(&store, &job.id, &token, T0 + 40_000, T0 + 10).await, JobStart::Started { attempt: 1 });
    assert_eq!(start(&store, &job.id, "another-token", T0 + 40_000, T0 + 10).await, JobStart::LeaseLost);
    let started = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((started.started_at, started.lease.as_ref().map(|l| l.deadline)), (Some(T0), Some(T0 + 30_000)));

    let mut running = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.attempts, 1);
    running.attempts = 1;
    let settlement = Settlement::Completed { output: json!({"ok": true}) };
    let plan = Plan { events: sluice_core::execution::settlement_events(&running, &settlement), ..Plan::default() };
    let r = store.settle(&running, &token, &settlement, &plan, None, 0, None, T0 + 5).await.unwrap();
    assert_eq!(r, SettleOutcome::Applied);
    let again = store.settle(&running, &token, &settlement, &plan, None, 0, None, T0 + 6).await.unwrap();
    assert_eq!(again, SettleOutcome::LeaseLost, "a result is applied once");

    let done = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.finished_at, Some(T0 + 5));
    assert!(done.lease.is_none());
    let all = events(&redis).await;
    let kinds: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["job.enqueued", "job.started", "job.completed"]);
    assert_eq!(all[1].1["worker"], "w1", "job.started names the lease holder: {:?}", all[1].1);
}

#[tokio::test]
async fn higher_priority_leases_first_then_arrival_order() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let mut jobs = Vec::new();
    for p in [0, 5, 0, 5] {
        let mut j = new_job("default");
        j.priority = p;
        jobs.push(j);
    }
    store.enqueue(&jobs, T0).await.unwrap();
    let leased = store.lease(0, "default", Lane::Builtin, "w", 10, T0 + 1000, T0, 10).await.unwrap();
    let order: Vec<&str> = leased.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(order, [&jobs[1].id, &jobs[3].id, &jobs[0].id, &jobs[2].id]);
}

#[tokio::test]
async fn a_dedupe_key_returns_the_pending_job_until_it_starts() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let mut a = new_job("default");
    a.dedupe_key = Some("nightly".into());
    let mut b = new_job("default");
    b.dedupe_key = Some("nightly".into());
    store.enqueue(std::slice::from_ref(&a), T0).await.unwrap();
    let out = store.enqueue(std::slice::from_ref(&b), T0).await.unwrap();
    assert_eq!(out, vec![EnqueueOutcome::Existing(a.id.clone())]);
    assert!(store.get_job(&b.id).await.unwrap().is_none());

    let leased = store.lease(0, "default", Lane::Builtin, "w", 10, T0 + 1000, T0, 10).await.unwrap();
    let token = leased.jobs[0].lease.as_ref().unwrap().token.clone();
    start(&store, &a.id, &token, T0 + 1000, T0).await;
    let out = store.enqueue(std::slice::from_ref(&b), T0).await.unwrap();
    assert_eq!(out, vec![EnqueueOutcome::Created(b.id.clone())], "once running, the key is free");
}

#[tokio::test]
async fn a_retry_waits_for_its_backoff_in_the_delayed_set() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    let leased = store.lease(0, "default", Lane::Builtin, "w", 1, T0 + 10_000, T0, 10).await.unwrap();
    let token = leased.jobs[0].lease.clone().unwrap().token;
    start(&store, &job.id, &token, T0 + 10_000, T0).await;
    let running = store.get_job(&job.id).await.unwrap().unwrap();
    let settlement = Settlement::Retry { error: JobError::retryable("exit code 1"), at: T0 + 1_000, delay_ms: 1_000 };
    let r = store.settle(&running, &token, &settlement, &Plan::default(), None, 0, None, T0).await.unwrap();
    assert_eq!(r, SettleOutcome::Applied);

    let early = store.lease(0, "default", Lane::Builtin, "w", 1, T0 + 10_000, T0 + 999, 10).await.unwrap();
    assert!(early.jobs.is_empty());
    assert_eq!(early.next_due, Some(T0 + 1_000));
    let due = store.lease(0, "default", Lane::Builtin, "w", 1, T0 + 10_000, T0 + 1_000, 10).await.unwrap();
    assert_eq!(due.jobs.len(), 1);
    assert_eq!(due.jobs[0].attempts, 1);
    assert_eq!(due.jobs[0].last_error.as_ref().unwrap().message, "exit code 1");
}

#[tokio::test]
async fn cancel_removes_a_pending_job_wherever_it_waits() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let ready = new_job("default");
    let mut delayed = new_job("default");
    delayed.run_at = Some(T0 + 60_000);
    let prefetched = new_job("other");
    store.enqueue(&[ready.clone(), delayed.clone(), prefetched.clone()], T0).await.unwrap();
    let reserved = store.lease(0, "other", Lane::Builtin, "w", 1, T0 + 10_000, T0, 10).await.unwrap();
    let token = reserved.jobs[0].lease.clone().unwrap().token;

    for job in [&ready, &delayed, &prefetched] {
        let j = store.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!(store.cancel(&j, &Plan::default(), None, T0).await.unwrap(), CancelOutcome::Cancelled);
        assert_eq!(store.get_job(&job.id).await.unwrap().unwrap().status, JobStatus::Cancelled);
    }
    assert_eq!(start(&store, &prefetched.id, &token, T0 + 10_000, T0).await, JobStart::Cancelled);
    let later = store.lease(0, "default", Lane::Builtin, "w", 10, T0 + 200_000, T0 + 100_000, 10).await.unwrap();
    assert!(later.jobs.is_empty(), "a cancelled job is never leased");
    assert_eq!(later.next_due, None);

    let j = store.get_job(&ready.id).await.unwrap().unwrap();
    assert_eq!(
        store.cancel(&j, &Plan::default(), None, T0).await.unwrap(),
        CancelOutcome::NotPending(JobStatus::Cancelled)
    );
}

#[tokio::test]
async fn a_holder_whose_lease_expired_and_was_re_leased_changes_nothing() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    let first = store.lease(0, "default", Lane::Builtin, "a", 1, T0 + 1_000, T0, 10).await.unwrap();
    let old = first.jobs[0].lease.clone().unwrap().token;
    start(&store, &job.id, &old, T0 + 1_000, T0).await;

    // The lease expires; the reclaim puts the job back as a failed attempt (delayed 1 s).
    let (released, running) = store.reclaim(0, T0 + 2_000, 10).await.unwrap();
    assert_eq!(released, 0);
    assert_eq!(running, vec![(job.id.clone(), old.clone())]);
    let expired = store.get_job(&job.id).await.unwrap().unwrap();
    let settlement = Settlement::Retry { error: JobError::retryable("lease expired"), at: T0 + 2_000, delay_ms: 0 };
    let r = store.settle(&expired, &old, &settlement, &Plan::default(), None, T0 + 2_000, None, T0 + 2_000).await.unwrap();
    assert_eq!(r, SettleOutcome::Applied);
    let second = store.lease(0, "default", Lane::Builtin, "b", 1, T0 + 9_000, T0 + 2_000, 10).await.unwrap();
    let new = second.jobs[0].lease.clone().unwrap().token;
    assert_ne!(old, new);
    start(&store, &job.id, &new, T0 + 9_000, T0 + 2_000).await;

    // The old holder comes back: heartbeat, start, settle and release all report the loss.
    assert_eq!(store.heartbeat(&[(job.id.clone(), old.clone())], T0 + 99_000).await.unwrap(), vec![LeaseState::Lost]);
    let stale = store.get_job(&job.id).await.unwrap().unwrap();
    let done = Settlement::Completed { output: Value::Null };
    assert_eq!(
        store.settle(&stale, &old, &done, &Plan::default(), None, 0, None, T0 + 3_000).await.unwrap(),
        SettleOutcome::LeaseLost
    );
    assert!(!store.release(&job.id, "default", Lane::Builtin, &old, T0 + 3_000).await.unwrap());
    let now = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(now.status, JobStatus::Running);
    assert_eq!(now.attempts, 2);
    assert_eq!(now.lease.unwrap().token, new);
    assert_eq!(store.heartbeat(&[(job.id.clone(), new)], T0 + 99_000).await.unwrap(), vec![LeaseState::Held]);
}

#[tokio::test]
async fn expired_reservations_return_to_the_queue_without_counting_an_attempt() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    store.lease(0, "default", Lane::Builtin, "a", 1, T0 + 1_000, T0, 10).await.unwrap();
    let (released, running) = store.reclaim(0, T0 + 1_001, 10).await.unwrap();
    assert_eq!((released, running.len()), (1, 0));
    let again = store.lease(0, "default", Lane::Builtin, "b", 1, T0 + 9_000, T0 + 1_001, 10).await.unwrap();
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.jobs[0].attempts, 0);
}

#[tokio::test]
async fn release_gives_a_running_job_back_without_counting_the_attempt() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    let l = store.lease(0, "default", Lane::Builtin, "a", 1, T0 + 1_000, T0, 10).await.unwrap();
    let token = l.jobs[0].lease.clone().unwrap().token;
    start(&store, &job.id, &token, T0 + 1_000, T0).await;
    assert!(store.release(&job.id, "default", Lane::Builtin, &token, T0 + 10).await.unwrap());
    let j = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempts), (JobStatus::Pending, 0));
    assert_eq!(store.lease(0, "default", Lane::Builtin, "b", 1, T0 + 9_000, T0 + 20, 10).await.unwrap().jobs.len(), 1);
}

#[tokio::test]
async fn promotion_moves_due_jobs_in_bounded_chunks() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let jobs: Vec<NewJob> = (0..25)
        .map(|_| {
            let mut j = new_job("default");
            j.run_at = Some(T0 + 100);
            j
        })
        .collect();
    store.enqueue(&jobs, T0).await.unwrap();
    assert_eq!(store.promote(0, "default", Lane::Builtin, T0 + 99, 10).await.unwrap(), 0);
    assert_eq!(store.promote(0, "default", Lane::Builtin, T0 + 100, 10).await.unwrap(), 10);
    assert_eq!(store.promote(0, "default", Lane::Builtin, T0 + 100, 10).await.unwrap(), 10);
    assert_eq!(store.promote(0, "default", Lane::Builtin, T0 + 100, 10).await.unwrap(), 5);
    assert_eq!(store.promote(0, "default", Lane::Builtin, T0 + 100, 10).await.unwrap(), 0);
    assert_eq!(store.queues(0).await.unwrap(), vec!["default".to_string()]);
    let _ = Duration::ZERO;
}

/// Concurrent starts and settles go out as a few batched script calls, and each is applied
/// exactly as it would be alone: once, under its own token, with a duplicate refused.
#[tokio::test]
async fn concurrent_starts_and_settles_are_batched_and_each_applied_once() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let n = 200;
    let jobs: Vec<NewJob> = (0..n).map(|_| new_job("default")).collect();
    store.enqueue(&jobs, T0).await.unwrap();
    let leased = store.lease(0, "default", Lane::Builtin, "w", n, T0 + 30_000, T0, 10).await.unwrap();
    assert_eq!(leased.jobs.len(), n);
    store.reset_command_counts().await.unwrap();

    let started = futures::future::join_all(leased.jobs.iter().map(|job| {
        let token = job.lease.as_ref().unwrap().token.clone();
        let store = store.clone();
        async move { store.start(job, &token, T0 + 30_000, T0).await.unwrap() }
    }))
    .await;
    assert!(started.iter().all(|s| *s == JobStart::Started { attempt: 1 }), "{started:?}");

    let settle_all = || {
        futures::future::join_all(leased.jobs.iter().map(|job| {
            let token = job.lease.as_ref().unwrap().token.clone();
            let store = store.clone();
            let mut job = job.clone();
            job.attempts = 1;
            async move {
                let settlement = Settlement::Completed { output: json!({"id": job.id}) };
                let plan = Plan { events: sluice_core::execution::settlement_events(&job, &settlement), ..Plan::default() };
                store.settle(&job, &token, &settlement, &plan, None, 0, None, T0 + 5).await.unwrap()
            }
        }))
    };
    let settled = settle_all().await;
    assert!(settled.iter().all(|s| *s == SettleOutcome::Applied), "{settled:?}");
    let counts = store.command_counts().await.unwrap();
    let scripts = counts.get("evalsha").copied().unwrap_or(0) + counts.get("eval").copied().unwrap_or(0);
    assert!(scripts < (2 * n as u64) / 4, "{scripts} script calls for {n} starts and {n} settles: not batched");

    let again = settle_all().await;
    assert!(again.iter().all(|s| *s == SettleOutcome::LeaseLost), "a result is applied once: {again:?}");
    for job in &jobs {
        let done = store.get_job(&job.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.attempts), (JobStatus::Completed, 1));
        assert_eq!(done.result, Some(json!({"id": job.id})), "each settle wrote its own result");
    }
    let completed = events(&redis).await.iter().filter(|(k, _)| k == "job.completed").count();
    assert_eq!(completed, n);
}

#[tokio::test]
async fn a_pending_job_with_a_small_payload_is_stored_as_a_compact_hash_and_reads_back_whole() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let mut job = new_job("default");
    job.retry = RetryPolicy { max_attempts: 7, backoff: Backoff::Exponential, initial_ms: 250, max_ms: 90_000, jitter: true };
    job.timeout_ms = Some(30_000);
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();

    // Every value fits Redis's small-hash limit, so the hash is one listpack, not a table.
    let key = store.keys().job(0, &job.id);
    let encoding: String = redis::cmd("OBJECT").arg("ENCODING").arg(&key).query(&mut redis.conn()).unwrap();
    assert_eq!(encoding, "listpack");

    let read = store.get_job(&job.id).await.unwrap().expect("the job exists");
    assert_eq!(read.retry, job.retry);
    assert_eq!(read.timeout_ms, Some(30_000));
    assert_eq!(read.payload, job.payload);
}

#[tokio::test]
async fn a_job_written_with_the_json_retry_policy_of_earlier_releases_still_reads() {
    let redis = RedisServer::start();
    let store = store(&redis).await;
    let job = new_job("default");
    store.enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    let key = store.keys().job(0, &job.id);
    let legacy = r#"{"max_attempts":4,"backoff":"exponential","initial_ms":500,"max_ms":8000,"jitter":true}"#;
    let _: () = redis::cmd("HSET").arg(&key).arg("retry").arg(legacy).query(&mut redis.conn()).unwrap();
    let read = store.get_job(&job.id).await.unwrap().expect("the job exists");
    let expected = RetryPolicy { max_attempts: 4, backoff: Backoff::Exponential, initial_ms: 500, max_ms: 8_000, jitter: true };
    assert_eq!(read.retry, expected);

    let _: () = redis::cmd("HSET").arg(&key).arg("retry").arg("sideways/1/2/3").query(&mut redis.conn()).unwrap();
    let err = store.get_job(&job.id).await.unwrap_err().to_string();
    assert!(err.contains("`retry`"), "{err}");
}
