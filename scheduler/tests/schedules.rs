//! Schedules fired by scheduler ticks against a real `redis-server`, with time from a fake
//! clock: three scheduler loops fire 200 due schedules once each; a fire on a target held
//! by an execution parked on an approval is skipped (once in the history) and happens on the
//! first tick after the approval; five due times missed while no scheduler ran give one
//! late fire (or, with `catch_up = "none"`, a skipped row); and the Redis commands of a tick
//! do not grow with the number of schedules that are not due.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::approval::{Vote, Voter};
use sluice_core::execution::StartRequest;
use sluice_core::schedule::{self, RunStatus, Source};
use sluice_core::{Clock, ExecutionStatus, FakeClock, Schedule, ids, pipeline};
use sluice_scheduler::{SchedulerConfig, tick};
use sluice_store::engine::Engine;
use sluice_store::{Created, StartOutcome, Store, StoreConfig};
use sluice_testkit::RedisServer;
use sluice_testkit::redis::{self, Commands};

/// A minute boundary.
const T0: i64 = 1_700_000_040_000;
const MIN: i64 = 60_000;

const NOOP: &str = r#"
id = "tidy"
[[steps]]
name = "run"
kind = "noop"
"#;

const GATED: &str = r#"
id = "gated"
[[steps]]
name = "approve"
kind = "approval"
"#;

async fn engine(redis: &RedisServer, clock: &FakeClock) -> Engine {
    let store = Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap();
    let engine = Engine::new(store, Arc::new(clock.clone()));
    for text in [NOOP, GATED] {
        let p = pipeline::parse_toml(text).unwrap();
        engine.store().put_pipeline(&p, clock.now_ms()).await.unwrap();
    }
    engine
}

async fn create(engine: &Engine, body: Value) -> Schedule {
    let spec = schedule::parse_spec(&body, "", None).unwrap();
    match engine.create_schedule(spec, Source::Api).await.unwrap() {
        Created::Created(s) => *s,
        other => panic!("not created: {other:?}"),
    }
}

/// Every event of shard 0's stream: (type, data).
fn events(redis: &RedisServer) -> Vec<(String, Value)> {
    let mut conn = redis.conn();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all("{sluice:0}:events").unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let kind: String = e.get("type").unwrap();
            let data: String = e.get("data").unwrap();
            (kind, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

fn of_type<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|(k, _)| k == kind).map(|(_, d)| d).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_scheduler_loops_fire_200_due_schedules_once_each() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock).await;
    let mut schedules = Vec::new();
    for i in 0..200 {
        // Half of them share targets in pairs, with overlap allowed; the rest have their own.
        let body = if i % 2 == 0 {
            json!({"name": format!("s{i}"), "pipeline": "tidy", "cron": "* * * * *", "target": format!("t{}", i / 4), "overlap": "allow"})
        } else {
            json!({"name": format!("s{i}"), "pipeline": "tidy", "cron": "* * * * *"})
        };
        schedules.push(create(&engine, body).await);
    }
    clock.set(T0 + MIN + 100);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = SchedulerConfig { tick: Duration::from_millis(5), fire_chunk: 7, ..SchedulerConfig::default() };
    let mut loops = Vec::new();
    for _ in 0..3 {
        let engine = engine.clone();
        let config = config.clone();
        let mut stopped = stopped.clone();
        loops.push(tokio::spawn(async move {
            sluice_scheduler::run(engine, config, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        }));
    }
    sluice_testkit::wait_until(Duration::from_secs(30), "every schedule to fire", || async {
        let fired = of_type(&events(&redis), "schedule.fired").len();
        (fired >= 200).then_some(())
    })
    .await;
    // Let the loops run on a while: nothing more may happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    for l in loops {
        l.await.unwrap();
    }

    let all = events(&redis);
    let mut fires: HashMap<String, Vec<&Value>> = HashMap::new();
    for f in of_type(&all, "schedule.fired") {
        fires.entry(f["schedule_id"].as_str().unwrap().to_string()).or_default().push(f);
    }
    assert_eq!(fires.len(), 200, "every schedule fired");
    for s in &schedules {
        let list = &fires[&s.id];
        assert_eq!(list.len(), 1, "{} fired {} times", s.name, list.len());
        assert_eq!(list[0]["due_at"], json!(T0 + MIN));
    }
    let started: Vec<String> =
        of_type(&all, "execution.started").iter().map(|d| d["execution_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(started.len(), 200, "one execution per fire");
    let mut fired_executions: Vec<String> =
        fires.values().map(|l| l[0]["execution_id"].as_str().unwrap().to_string()).collect();
    fired_executions.sort();
    let mut started_sorted = started.clone();
    started_sorted.sort();
    assert_eq!(fired_executions, started_sorted, "each fire started the execution it names");
    for s in &schedules {
        let stored = engine.store().get_schedule(&s.id).await.unwrap().unwrap();
        assert_eq!(stored.next_run_at, Some(T0 + 2 * MIN), "{}", s.name);
        let runs = engine.schedule_runs(&s.id, None, 10).await.unwrap();
        assert_eq!(runs.items.len(), 1, "{}", s.name);
    }
}

#[tokio::test]
async fn a_fire_on_a_target_parked_on_an_approval_is_skipped_until_the_first_tick_after_the_approval() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock).await;
    let config = SchedulerConfig::default();
    let gated = engine.store().get_pipeline("gated").await.unwrap().unwrap();
    let request = StartRequest {
        pipeline: gated.pipeline,
        pipeline_version: gated.version,
        input: json!({}),
        target: Some("repo:web".into()),
        idempotency_key: None,
    };
    let StartOutcome::Started(holder) = engine.store().start_execution(request, clock.now_ms()).await.unwrap() else { panic!() };
    assert_eq!(holder.status, ExecutionStatus::Blocked, "parked on its approval");
    let s = create(&engine, json!({"name": "nightly", "pipeline": "tidy", "cron": "* * * * *", "target": "repo:web"})).await;

    // Due, but the target is busy: skipped, next_run_at kept; later ticks add no row.
    clock.set(T0 + MIN + 200);
    for i in 0..3 {
        let report = tick(&engine, &config).await.unwrap();
        assert_eq!((report.schedules.fired, report.schedules.skipped), (0, 1), "tick {i}");
        clock.advance(1_000);
    }
    let stored = engine.store().get_schedule(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.next_run_at, Some(T0 + MIN), "a skip keeps the due time");
    let runs = engine.schedule_runs(&s.id, None, 10).await.unwrap().items;
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status, runs[0].blocked_by.as_deref()), (RunStatus::Skipped, Some(holder.id.as_str())));
    assert_eq!(runs[0].reason.as_deref(), Some(schedule::reasons::TARGET_BUSY));
    assert_eq!(of_type(&events(&redis), "schedule.skipped").len(), 1, "one skipped event per due time");

    // The approval completes the holder and frees the target: the next tick fires.
    let voter = Voter { subject: "ann".into(), roles: vec!["user".into()] };
    engine.vote(&holder.id, 0, &Vote::Approve(None), &voter).await.unwrap();
    let freed = engine.store().get_execution(&holder.id).await.unwrap().unwrap();
    assert_eq!(freed.status, ExecutionStatus::Completed);
    let fired_at = clock.now_ms();
    let report = tick(&engine, &config).await.unwrap();
    assert_eq!(report.schedules.fired, 1);
    let runs = engine.schedule_runs(&s.id, None, 10).await.unwrap().items;
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].status, runs[0].due_at, runs[0].late_ms), (RunStatus::Running, Some(T0 + MIN), fired_at - T0 - MIN));
    let stored = engine.store().get_schedule(&s.id).await.unwrap().unwrap();
    assert_eq!((stored.last_run_at, stored.next_run_at), (Some(fired_at), Some(T0 + 2 * MIN)));
    let exec = engine.store().get_execution(runs[0].execution_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(exec.target.as_deref(), Some("repo:web"));
    let metrics = engine.metrics().render(None);
    assert!(metrics.contains("sluice_schedule_fires_total{outcome=\"fired\"} 1\n"), "{metrics}");
    assert!(metrics.contains("sluice_schedule_fires_total{outcome=\"skipped\"} 3\n"), "one per tick that found the target busy: {metrics}");
}

#[tokio::test]
async fn five_due_times_missed_while_no_scheduler_ran_give_one_late_fire_or_none() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock).await;
    let one = create(&engine, json!({"name": "one", "pipeline": "tidy", "cron": "* * * * *"})).await;
    let none = create(&engine, json!({"name": "none", "pipeline": "tidy", "cron": "* * * * *", "catch_up": "none"})).await;
    // Due at T0 + 1 min … T0 + 5 min while no scheduler runs; it comes back 30 s later.
    clock.set(T0 + 5 * MIN + 30_000);
    let config = SchedulerConfig::default();
    let report = tick(&engine, &config).await.unwrap();
    assert_eq!((report.schedules.fired, report.schedules.dropped), (1, 1));
    let again = tick(&engine, &config).await.unwrap();
    assert_eq!(again.schedules, Default::default(), "nothing is due any more");

    let runs = engine.schedule_runs(&one.id, None, 10).await.unwrap().items;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!((run.status, run.due_at, run.missed, run.late), (RunStatus::Running, Some(T0 + MIN), 4, true));
    assert_eq!(run.late_ms, 4 * MIN + 30_000);
    let fired = of_type(&events(&redis), "schedule.fired").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0]["missed"].clone(), fired[0]["late"].clone()), (json!(4), json!(true)));

    let runs = engine.schedule_runs(&none.id, None, 10).await.unwrap().items;
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status, runs[0].missed, runs[0].execution_id.as_ref()), (RunStatus::Skipped, 5, None));
    assert_eq!(runs[0].reason.as_deref(), Some(schedule::reasons::MISSED));
    assert_eq!(of_type(&events(&redis), "execution.started").len(), 1, "only the catch-up one started anything");
    for s in [&one, &none] {
        let stored = engine.store().get_schedule(&s.id).await.unwrap().unwrap();
        assert_eq!(stored.next_run_at, Some(T0 + 6 * MIN), "{}", s.name);
    }
}

/// Writes `n` schedules that are not due for a year, straight through the store.
async fn not_due(engine: &Engine, n: usize, now: i64) {
    let spec = schedule::parse_spec(&json!({"name": "x", "pipeline": "tidy", "cron": "0 0 1 1 *"}), "", None).unwrap();
    let store = engine.store();
    let mut pending = Vec::new();
    for i in 0..n {
        let mut s = Schedule::new(spec.clone(), ids::new_id(ids::SCHEDULE, 0), Source::Api, now);
        s.name = format!("idle-{i}");
        pending.push(s);
        if pending.len() == 500 || i + 1 == n {
            let batch = std::mem::take(&mut pending);
            let writes = batch.iter().map(|s| store.put_schedule(s, 0, schedule::NextRun::Set(s.next_run_at), now));
            for w in futures::future::join_all(writes).await {
                w.unwrap();
            }
        }
    }
}

/// Redis commands run by one tick that fires `due` schedules among `idle` ones that are not
/// due: `(script calls, commands)`, from `INFO commandstats`.
async fn tick_cost(idle: usize, due: usize) -> (u64, u64) {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock).await;
    not_due(&engine, idle, clock.now_ms()).await;
    for i in 0..due {
        create(&engine, json!({"name": format!("due-{i}"), "pipeline": "tidy", "cron": "* * * * *"})).await;
    }
    let mut conn = redis.conn();
    let total: usize = conn.zcard("{sluice:0}:schs:due").unwrap();
    assert_eq!(total, idle + due);
    clock.set(T0 + MIN + 10);
    let store = engine.store();
    store.ready().await.unwrap();
    store.reset_command_counts().await.unwrap();
    let report = tick(&engine, &SchedulerConfig::default()).await.unwrap();
    let counts: BTreeMap<String, u64> = store.command_counts().await.unwrap();
    assert_eq!(report.schedules.fired, due);
    let admin = |name: &str| name == "info" || name.starts_with("config");
    let scripts = counts.iter().filter(|(k, _)| k.starts_with("eval")).map(|(_, v)| v).sum();
    let commands = counts.iter().filter(|(k, _)| !admin(k) && !k.starts_with("eval")).map(|(_, v)| v).sum();
    (scripts, commands)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_of_a_tick_does_not_grow_with_the_schedules_that_are_not_due() {
    let small = tick_cost(1_000, 5).await;
    let large = tick_cost(100_000, 5).await;
    eprintln!("one tick firing 5 of 1 005 schedules: {small:?}; of 100 005: {large:?} (script calls, commands)");
    assert!(small.1 > 0);
    assert_eq!(small, large, "a tick costs the same with 1 000 or 100 000 schedules that are not due");
}
