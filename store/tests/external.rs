//! The two lanes of a queue and the results external workers post, against a real
//! `redis-server` started by the test kit: a job waits in the lane its kind decides, each
//! lease reads only its own lane, and a posted result is applied once per attempt whatever
//! is posted again. The engine's metrics count what it decides for these jobs.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_core::control::{Action, Operator};
use sluice_core::execution::StartRequest;
use sluice_core::ids;
use sluice_core::job::{Job, JobError, JobStatus, NewJob, Outcome, kinds};
use sluice_core::pipeline::{Pipeline, StepDef, StepKind};
use sluice_core::retry::{Backoff, RetryPolicy};
use sluice_core::{ExecutionStatus, FakeClock, StepStatus};
use sluice_store::engine::{Acted, Cancelled, Engine, PostedResult, ResultPosted, Settled};
use sluice_store::{AWAITING_RESULT, JobStart, Lane, SettleOutcome, StartOutcome, Store, StoreConfig};
use sluice_testkit::RedisServer;
use sluice_testkit::metrics::Scrape;
use sluice_testkit::redis::Commands;

const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 5_000;

async fn engine(redis: &RedisServer) -> (Engine, FakeClock) {
    let store = Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap();
    let clock = FakeClock::new(T0);
    (Engine::new(store, Arc::new(clock.clone())), clock)
}

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, backoff: Backoff::Fixed, initial_ms: 1_000, max_ms: 1_000, jitter: false }
}

fn new_job(queue: &str, kind: &str) -> NewJob {
    NewJob {
        id: ids::new_id(ids::JOB, 0),
        queue: queue.into(),
        kind: kind.into(),
        payload: json!({"image": "cat.png"}),
        priority: 0,
        retry: retry(3),
        timeout_ms: None,
        run_at: None,
        dedupe_key: None,
        execution_id: None,
        step: None,
    }
}

fn step(name: &str, kind: StepKind) -> StepDef {
    StepDef { name: name.into(), queue: "default".into(), timeout_ms: None, retry: retry(3), requires_approval: false, kind }
}

/// Starts an execution of `steps` directly (the pipeline is built here, not parsed).
async fn start_execution(engine: &Engine, steps: Vec<StepDef>) -> String {
    let pipeline = Pipeline { id: "p".into(), name: "p".into(), description: None, steps };
    let req = StartRequest { pipeline, pipeline_version: 1, input: json!({"who": "ops"}), target: None, idempotency_key: None };
    match engine.store().start_execution(req, engine.now()).await.unwrap() {
        StartOutcome::Started(e) => e.id,
        other => panic!("{other:?}"),
    }
}

fn posted(key: &str, token: Option<&str>, outcome: Outcome) -> PostedResult {
    PostedResult { idempotency_key: key.into(), token: token.map(str::to_string), outcome }
}

fn token(job: &Job) -> String {
    job.lease.as_ref().expect("a leased job has a lease").token.clone()
}

/// Enqueues a job of a custom kind in queue `q` and leases it as external worker `ext`;
/// returns the job as leased and its token.
async fn leased_custom_job(engine: &Engine) -> (Job, String) {
    let job = new_job("q", "resize-image");
    engine.store().enqueue(std::slice::from_ref(&job), engine.now()).await.unwrap();
    let mut leased = engine.lease_external("q", "ext", 1, TTL).await.unwrap();
    assert_eq!(leased.jobs.len(), 1);
    let job = leased.jobs.remove(0);
    let token = token(&job);
    (job, token)
}

/// Leases one job of `queue`'s builtin lane the way a worker does, and starts it.
async fn run_builtin(engine: &Engine, queue: &str) -> (Job, String) {
    let now = engine.now();
    let mut leased = engine.store().lease(0, queue, Lane::Builtin, "w", 1, now + TTL, now, 10).await.unwrap();
    assert_eq!(leased.jobs.len(), 1, "one job in the builtin lane");
    let mut job = leased.jobs.remove(0);
    let token = token(&job);
    let started = engine.store().start(&job, &token, now + TTL, now).await.unwrap();
    let JobStart::Started { attempt } = started else { panic!("{started:?}") };
    job.attempts = attempt;
    job.status = JobStatus::Running;
    (job, token)
}

async fn event_kinds(store: &Store) -> Vec<(String, Value)> {
    store.stream_range(0, "-", "+").await.unwrap().into_iter().map(|e| (e.kind, e.data)).collect()
}

fn count(events: &[(String, Value)], kind: &str, job: &str) -> usize {
    events.iter().filter(|(k, d)| k == kind && d["job_id"] == job).count()
}

#[tokio::test]
async fn each_job_waits_in_the_lane_of_its_kind_and_each_lease_reads_only_its_own() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let store = engine.store();
    let builtin = new_job("media", kinds::COMMAND);
    let custom = new_job("media", "resize-image");
    store.enqueue(&[builtin.clone(), custom.clone()], T0).await.unwrap();
    let mut raw = redis.conn();
    let lane: String = raw.hget(store.keys().job(0, &custom.id), "lane").unwrap();
    assert_eq!(lane, "external");

    let stats = store.queue_stats(None, T0, 1_000).await.unwrap();
    assert_eq!(stats.len(), 1, "lanes are not queues of their own: {stats:?}");
    assert_eq!((stats[0].queue.as_str(), stats[0].ready, stats[0].external_ready), ("media", 2, 1));

    // sluice's workers get the command job, never the custom one.
    let leased = store.lease(0, "media", Lane::Builtin, "w", 10, T0 + TTL, T0, 10).await.unwrap();
    assert_eq!(leased.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [builtin.id.as_str()]);

    // An external worker gets the custom job, already running, and never the command job.
    let external = engine.lease_external("media", "ext-1", 10, TTL).await.unwrap();
    assert_eq!(external.jobs.len(), 1);
    let job = &external.jobs[0];
    assert_eq!((job.id.as_str(), job.status, job.attempts), (custom.id.as_str(), JobStatus::Running, 1));
    let lease = job.lease.as_ref().unwrap();
    assert_eq!((lease.worker.as_str(), lease.deadline), ("ext-1", T0 + TTL));
    assert_eq!(job.started_at, Some(T0));
    assert_eq!(job.payload, json!({"image": "cat.png"}), "a standalone job's payload is served as enqueued");
    assert!(engine.lease_external("media", "ext-2", 10, TTL).await.unwrap().jobs.is_empty());
    assert!(store.lease(0, "media", Lane::Builtin, "w", 10, T0 + TTL, T0, 10).await.unwrap().jobs.is_empty());

    let events = event_kinds(store).await;
    let started: Vec<&Value> = events.iter().filter(|(k, d)| k == "job.started" && d["job_id"] == custom.id).map(|(_, d)| d).collect();
    assert_eq!(started.len(), 1);
    assert_eq!((started[0]["attempt"].as_u64(), started[0]["kind"].as_str()), (Some(1), Some("resize-image")));
    let stats = store.queue_stats(Some("media"), T0, 1_000).await.unwrap();
    assert_eq!((stats[0].ready, stats[0].external_ready, stats[0].running, stats[0].reserved), (0, 0, 1, 1));
}

#[tokio::test]
async fn pausing_a_queue_holds_both_lanes() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let store = engine.store();
    store.enqueue(&[new_job("q", "resize-image"), new_job("q", kinds::NOOP)], T0).await.unwrap();
    store.set_queue_paused("q", true).await.unwrap();
    assert!(engine.lease_external("q", "ext", 5, TTL).await.unwrap().jobs.is_empty());
    assert!(store.lease(0, "q", Lane::Builtin, "w", 5, T0 + TTL, T0, 10).await.unwrap().jobs.is_empty());
    assert!(store.queue_stats(Some("q"), T0, 1_000).await.unwrap()[0].paused);
    store.set_queue_paused("q", false).await.unwrap();
    assert_eq!(engine.lease_external("q", "ext", 5, TTL).await.unwrap().jobs.len(), 1);
    assert_eq!(store.lease(0, "q", Lane::Builtin, "w", 5, T0 + TTL, T0, 10).await.unwrap().jobs.len(), 1);
}

#[tokio::test]
async fn a_result_is_applied_once_per_key_and_once_per_attempt() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let (job, t) = leased_custom_job(&engine).await;

    let done = || Outcome::Completed(json!({"url": "cat-small.png"}));
    let first = engine.post_result(&job.id, &posted("k1", Some(&t), done())).await.unwrap();
    let answer = json!({"job_id": job.id, "attempt": 1, "outcome": "completed", "job_status": "completed"});
    assert_eq!(first, ResultPosted::Applied(answer.clone()));
    for _ in 0..2 {
        let again = engine.post_result(&job.id, &posted("k1", Some(&t), done())).await.unwrap();
        assert_eq!(again, ResultPosted::Replayed(answer.clone()));
    }
    // A different answer under the same key is still the first one's replay.
    let failed = Outcome::Failed(JobError::terminal("no"));
    assert_eq!(engine.post_result(&job.id, &posted("k1", None, failed.clone())).await.unwrap(), ResultPosted::Replayed(answer));
    // Another key for the settled attempt, with its token or without one.
    assert_eq!(engine.post_result(&job.id, &posted("k2", Some(&t), done())).await.unwrap(), ResultPosted::AlreadyApplied);
    assert_eq!(engine.post_result(&job.id, &posted("k2", None, done())).await.unwrap(), ResultPosted::AlreadyApplied);
    // A token the job never had.
    assert_eq!(engine.post_result(&job.id, &posted("k3", Some("nope"), done())).await.unwrap(), ResultPosted::LeaseLost);
    let unknown = ids::new_id(ids::JOB, 0);
    assert_eq!(engine.post_result(&unknown, &posted("k1", None, done())).await.unwrap(), ResultPosted::NotFound);

    let stored = engine.store().get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.result), (JobStatus::Completed, Some(json!({"url": "cat-small.png"}))));
    let events = event_kinds(engine.store()).await;
    assert_eq!(count(&events, "job.completed", &job.id), 1);
    assert_eq!(count(&events, "job.failed", &job.id), 0);
}

#[tokio::test]
async fn retries_and_expired_leases_stay_in_the_external_lane_and_stale_tokens_change_nothing() {
    let redis = RedisServer::start();
    let (engine, clock) = engine(&redis).await;
    let store = engine.store();
    let (job, t1) = leased_custom_job(&engine).await;

    // A retryable failure: back to the external lane's delayed set for the backoff.
    let failure = Outcome::Failed(JobError::retryable("the disk was full"));
    let answer = engine.post_result(&job.id, &posted("a1", Some(&t1), failure)).await.unwrap();
    let expected = json!({"job_id": job.id, "attempt": 1, "outcome": "failed", "job_status": "pending", "next_attempt_at": T0 + 1_000});
    assert_eq!(answer, ResultPosted::Applied(expected.clone()));
    let early = engine.lease_external("q", "ext-a", 1, TTL).await.unwrap();
    assert_eq!((early.jobs.len(), early.next_due), (0, Some(T0 + 1_000)));
    clock.advance(1_000);
    assert!(store.lease(0, "q", Lane::Builtin, "w", 1, T0 + 10_000, engine.now(), 10).await.unwrap().jobs.is_empty());
    let second = engine.lease_external("q", "ext-b", 1, TTL).await.unwrap();
    assert_eq!(second.jobs[0].attempts, 2);
    let t2 = token(&second.jobs[0]);
    // The first attempt's key still answers what it answered; its token is settled.
    assert_eq!(engine.post_result(&job.id, &posted("a1", Some(&t1), Outcome::Completed(json!(1)))).await.unwrap(), ResultPosted::Replayed(expected));
    assert_eq!(engine.post_result(&job.id, &posted("a1-bis", Some(&t1), Outcome::Completed(json!(1)))).await.unwrap(), ResultPosted::AlreadyApplied);

    // Worker b stops heartbeating: the lease expires and the reclaim fails the attempt.
    clock.advance(TTL + 1);
    assert_eq!(engine.reclaim(0, 10).await.unwrap(), (0, 1));
    clock.advance(1_000);
    let third = engine.lease_external("q", "ext-c", 1, TTL).await.unwrap();
    assert_eq!(third.jobs[0].attempts, 3, "the expired attempt came back to the external lane");
    let t3 = token(&third.jobs[0]);

    // Worker b comes back: its heartbeat and its result are refused and change nothing.
    let late = engine.now() + TTL;
    assert_eq!(store.heartbeat(&[(job.id.clone(), t2.clone())], late).await.unwrap(), vec![sluice_store::LeaseState::Lost]);
    let stale = engine.post_result(&job.id, &posted("b", Some(&t2), Outcome::Completed(json!("b")))).await.unwrap();
    assert_eq!(stale, ResultPosted::LeaseLost);
    let now = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.attempts, token(&now)), (JobStatus::Running, 3, t3.clone()));
    let done = engine.post_result(&job.id, &posted("c", Some(&t3), Outcome::Completed(json!("c")))).await.unwrap();
    assert!(matches!(done, ResultPosted::Applied(_)), "{done:?}");
    let events = event_kinds(store).await;
    assert_eq!(count(&events, "job.completed", &job.id), 1);
    assert_eq!(count(&events, "job.started", &job.id), 3);
}

#[tokio::test]
async fn a_post_without_a_token_is_for_the_running_attempt_only() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let job = new_job("q", "resize-image");
    engine.store().enqueue(std::slice::from_ref(&job), T0).await.unwrap();
    let done = || Outcome::Completed(json!(null));
    assert_eq!(engine.post_result(&job.id, &posted("k", None, done())).await.unwrap(), ResultPosted::LeaseLost);
    engine.lease_external("q", "ext", 1, TTL).await.unwrap();
    let applied = engine.post_result(&job.id, &posted("k", None, done())).await.unwrap();
    assert!(matches!(applied, ResultPosted::Applied(_)), "{applied:?}");
    assert_eq!(engine.store().get_job(&job.id).await.unwrap().unwrap().status, JobStatus::Completed);
}

#[tokio::test]
async fn an_external_step_gets_its_context_and_its_result_advances_the_execution() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let exec_id = start_execution(
        &engine,
        vec![
            step("build", StepKind::Noop { output: Some(json!({"sha": "abc123"})) }),
            step("resize", StepKind::External { params: Some(json!({"width": 64})) }),
            step("done", StepKind::Noop { output: None }),
        ],
    )
    .await;
    let (build, t) = run_builtin(&engine, "default").await;
    let settled = engine.settle(&build, &t, &Outcome::Completed(json!({"sha": "abc123"})), None, 0).await.unwrap();
    assert!(matches!(settled, Settled::Applied(_)));

    assert!(engine.store().lease(0, "default", Lane::Builtin, "w", 5, T0 + TTL, T0, 10).await.unwrap().jobs.is_empty(), "sluice's workers never get an external step");
    let leased = engine.lease_external("default", "ext", 5, TTL).await.unwrap();
    assert_eq!(leased.jobs.len(), 1);
    let job = &leased.jobs[0];
    assert_eq!((job.kind.as_str(), job.execution_id.as_deref(), job.step), ("external", Some(exec_id.as_str()), Some(1)));
    assert_eq!(job.payload["params"], json!({"width": 64}));
    let context = &job.payload["context"];
    assert_eq!(context["input"], json!({"who": "ops"}));
    assert_eq!(context["steps"]["build"]["output"], json!({"sha": "abc123"}));
    assert_eq!(context["execution"]["step"], "resize");
    let step_events = engine.store().execution_events(&exec_id).await.unwrap();
    assert!(step_events.iter().any(|e| e.kind == "execution.step.started" && e.data["step"] == 1), "{step_events:?}");

    let result = Outcome::Completed(json!({"thumb": "abc123-64.png"}));
    let applied = engine.post_result(&job.id, &posted("r", Some(&token(job)), result)).await.unwrap();
    assert!(matches!(applied, ResultPosted::Applied(_)), "{applied:?}");
    let exec = engine.store().get_execution(&exec_id).await.unwrap().unwrap();
    assert_eq!(exec.current, 2);
    assert_eq!((exec.steps[1].status, exec.steps[1].output.clone()), (StepStatus::Succeeded, Some(json!({"thumb": "abc123-64.png"}))));
    // The next step is a builtin one: it waits for sluice's workers.
    let (last, t) = run_builtin(&engine, "default").await;
    assert_eq!(last.step, Some(2));
    engine.settle(&last, &t, &Outcome::Completed(Value::Null), None, 0).await.unwrap();
    assert_eq!(engine.store().get_execution(&exec_id).await.unwrap().unwrap().status, ExecutionStatus::Completed);
}

#[tokio::test]
async fn an_http_step_that_answered_202_takes_its_result_from_a_post_under_its_token() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let http = StepKind::Http { url: "http://deployer.internal/deploy".into(), headers: Default::default(), result_timeout_ms: None };
    let exec_id = start_execution(&engine, vec![step("deploy", http), step("done", StepKind::Noop { output: None })]).await;
    let (job, t) = run_builtin(&engine, "default").await;
    assert_eq!(job.kind, "http");
    let deferred = Outcome::Deferred { deadline: T0 + 60_000 };
    assert!(matches!(engine.settle(&job, &t, &deferred, None, 0).await.unwrap(), Settled::Applied(_)));
    let waiting = engine.store().get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((waiting.status, waiting.lease.as_ref().unwrap().worker.as_str()), (JobStatus::Running, AWAITING_RESULT));
    let exec = engine.store().get_execution(&exec_id).await.unwrap().unwrap();
    assert_eq!(exec.steps[0].status, StepStatus::Waiting);

    // The remote service posts the result under the token it was sent.
    assert_eq!(engine.post_result(&job.id, &posted("d", Some("forged"), Outcome::Completed(json!(1)))).await.unwrap(), ResultPosted::LeaseLost);
    let result = Outcome::Completed(json!({"deployed": "v42"}));
    let applied = engine.post_result(&job.id, &posted("d", Some(&t), result.clone())).await.unwrap();
    let answer = json!({"job_id": job.id, "attempt": 1, "outcome": "completed", "job_status": "completed"});
    assert_eq!(applied, ResultPosted::Applied(answer.clone()));
    assert_eq!(engine.post_result(&job.id, &posted("d", Some(&t), result)).await.unwrap(), ResultPosted::Replayed(answer));
    let exec = engine.store().get_execution(&exec_id).await.unwrap().unwrap();
    assert_eq!((exec.current, exec.steps[0].output.clone()), (1, Some(json!({"deployed": "v42"}))));
    assert_eq!(count(&event_kinds(engine.store()).await, "job.completed", &job.id), 1);
}

#[tokio::test]
async fn stopping_an_execution_or_cancelling_a_job_takes_it_out_of_the_external_lane() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let external = || vec![step("resize", StepKind::External { params: None })];
    let stopped = start_execution(&engine, external()).await;
    let operator = Operator { subject: "ops".into(), reason: None };
    assert!(matches!(engine.act(&stopped, Action::Cancel, &operator).await.unwrap(), Acted::Applied(_)));
    let cancelled = start_execution(&engine, external()).await;
    let exec = engine.store().get_execution(&cancelled).await.unwrap().unwrap();
    let job_id = exec.steps[0].job_id.clone().unwrap();
    assert!(matches!(engine.cancel_job(&job_id).await.unwrap(), Cancelled::Cancelled(_)));

    let stats = engine.store().queue_stats(Some("default"), T0, 1_000).await.unwrap();
    assert_eq!((stats[0].ready, stats[0].external_ready, stats[0].cancelled), (0, 0, 2), "{stats:?}");
    assert!(engine.lease_external("default", "ext", 5, TTL).await.unwrap().jobs.is_empty());
}

#[tokio::test]
async fn the_settle_script_itself_replays_a_key_and_refuses_a_second_key_for_the_lease() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let store = engine.store();
    let (job, t) = leased_custom_job(&engine).await;
    let running = &job;
    let settlement = sluice_core::job::Settlement::Completed { output: json!(1) };
    let plan = sluice_core::execution::Plan::default();
    let record = |key: &str| sluice_store::ResultRecord { key: key.into(), answer: format!("{{\"key\":\"{key}\"}}") };
    let settle = |r: sluice_store::ResultRecord| {
        let (settlement, plan, t) = (settlement.clone(), plan.clone(), t.clone());
        async move { store.settle(running, &t, &settlement, &plan, None, 0, Some(&r), T0 + 1).await.unwrap() }
    };
    assert_eq!(settle(record("a")).await, SettleOutcome::Applied);
    assert_eq!(settle(record("a")).await, SettleOutcome::Replayed("{\"key\":\"a\"}".into()));
    assert_eq!(settle(record("b")).await, SettleOutcome::AlreadyApplied);
    let seen = store.posted_results(&job.id, "a", Some(&t), 1).await.unwrap();
    assert_eq!((seen.answer.as_deref(), seen.token_settled, seen.attempt_settled), (Some("{\"key\":\"a\"}"), true, true));
    let other = store.posted_results(&job.id, "b", Some("x"), 2).await.unwrap();
    assert_eq!(other, sluice_store::PostedResults::default());
}

#[tokio::test]
async fn concurrent_posts_of_one_result_apply_it_once_and_all_get_its_answer() {
    let redis = RedisServer::start();
    let (engine, _) = engine(&redis).await;
    let (job, t) = leased_custom_job(&engine).await;
    let posts = (0..16).map(|_| {
        let (engine, id, t) = (engine.clone(), job.id.clone(), t.clone());
        tokio::spawn(async move { engine.post_result(&id, &posted("same", Some(&t), Outcome::Completed(json!(7)))).await.unwrap() })
    });
    let mut applied = 0;
    for post in posts.collect::<Vec<_>>() {
        match post.await.unwrap() {
            ResultPosted::Applied(a) | ResultPosted::Replayed(a) if a["job_status"] == "completed" => {
                applied += 1;
            }
            other => panic!("every post gets the answer: {other:?}"),
        }
    }
    assert_eq!(applied, 16);
    assert_eq!(count(&event_kinds(engine.store()).await, "job.completed", &job.id), 1);
}

/// The jobs-by-outcome counter of queue `q`, kind `resize-image`.
fn resize(scrape: &Scrape, outcome: &str) -> f64 {
    scrape.counter("sluice_jobs_total", &[("queue", "q"), ("kind", "resize-image"), ("outcome", outcome)])
}

#[tokio::test]
async fn the_engine_counts_external_starts_posted_results_reclaims_cancels_and_the_jobs_it_creates() {
    let redis = RedisServer::start();
    let (engine, clock) = engine(&redis).await;
    let metrics = || Scrape::parse(&engine.metrics().render(None));
    let labels = [("queue", "q"), ("kind", "resize-image")];

    // Leased 2 s after it was due, failed after 0.5 s.
    let job = new_job("q", "resize-image");
    engine.store().enqueue(std::slice::from_ref(&job), engine.now()).await.unwrap();
    clock.advance(2_000);
    let t1 = token(&engine.lease_external("q", "ext", 1, TTL).await.unwrap().jobs[0]);
    clock.advance(500);
    let failure = Outcome::Failed(JobError::retryable("the disk was full"));
    engine.post_result(&job.id, &posted("a1", Some(&t1), failure)).await.unwrap();
    let once = metrics();
    assert_eq!(once.counter("sluice_jobs_enqueued_total", &labels), 1.0);
    assert_eq!((resize(&once, "started"), resize(&once, "retried")), (1.0, 1.0));
    assert_eq!(once.histogram_sum("sluice_job_queue_wait_seconds", &labels), 2.0);
    assert_eq!(once.histogram_sum("sluice_job_duration_seconds", &labels), 0.5);
    // A repeated post changes nothing, so counts nothing.
    engine.post_result(&job.id, &posted("a1", Some(&t1), Outcome::Completed(json!(1)))).await.unwrap();
    assert_eq!(resize(&metrics(), "retried"), 1.0);

    // The retry is leased when due (no wait), and its lease expires: reclaimed, retried again.
    clock.advance(1_000);
    assert_eq!(engine.lease_external("q", "ext", 1, TTL).await.unwrap().jobs.len(), 1);
    clock.advance(TTL + 1);
    assert_eq!(engine.reclaim(0, 10).await.unwrap(), (0, 1));
    let reclaimed = metrics();
    assert_eq!(reclaimed.counter("sluice_lease_reclaims_total", &[]), 1.0);
    assert_eq!((resize(&reclaimed, "started"), resize(&reclaimed, "retried")), (2.0, 2.0));
    assert_eq!(reclaimed.histogram_sum("sluice_job_queue_wait_seconds", &labels), 2.0);
    assert_eq!(reclaimed.histogram_sum("sluice_job_duration_seconds", &labels), 0.5 + (TTL + 1) as f64 / 1000.0);

    // A pending job cancelled: counted as cancelled, with no duration.
    let pending = new_job("q", "resize-image");
    engine.store().enqueue(std::slice::from_ref(&pending), engine.now()).await.unwrap();
    assert!(matches!(engine.cancel_job(&pending.id).await.unwrap(), Cancelled::Cancelled(_)));
    let cancelled = metrics();
    assert_eq!(resize(&cancelled, "cancelled"), 1.0);
    assert_eq!(cancelled.histogram_count("sluice_job_duration_seconds", &labels), 2.0);
    assert_eq!(cancelled.counter("sluice_jobs_enqueued_total", &labels), 2.0);

    // An execution's first job is counted when the start commits.
    start_execution(&engine, vec![step("only", StepKind::Noop { output: None })]).await;
    let started = metrics();
    assert_eq!(started.counter("sluice_jobs_enqueued_total", &[("queue", "default"), ("kind", "noop")]), 1.0);
    assert!(started.histogram_count("sluice_redis_round_trip_seconds", &[]) > 0.0);
}

#[tokio::test]
async fn a_call_redis_does_not_answer_is_not_a_round_trip_and_a_shared_handle_sees_every_call() {
    let mut redis = RedisServer::start();
    let shared = Arc::new(sluice_store::Metrics::new());
    let store = Store::connect(StoreConfig {
        url: redis.url(),
        response_timeout: std::time::Duration::from_millis(300),
        ..StoreConfig::default()
    })
    .await
    .unwrap()
    .with_metrics(shared.clone());
    assert!(Arc::ptr_eq(store.metrics(), &shared));
    let round_trips = || Scrape::parse(&shared.render(None)).histogram_count("sluice_redis_round_trip_seconds", &[]);
    store.ready().await.unwrap();
    let answered = round_trips();
    assert!(answered > 0.0);
    store.get_job("job_0_01ARZ3NDEKTSV4RRFFQ69G5FAV").await.unwrap();
    assert_eq!(round_trips(), answered + 1.0, "one call, one round trip");
    redis.stop();
    assert!(store.get_job("job_0_01ARZ3NDEKTSV4RRFFQ69G5FAV").await.is_err());
    assert_eq!(round_trips(), answered + 1.0);
}
