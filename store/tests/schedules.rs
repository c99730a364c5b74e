//! Schedules against a real `redis-server`, time from a fake clock: create and find by
//! name, unique names (a claim left by a crash taken over), changes under the revision, a
//! fire claimed once by racing engines, history pages, retention and deletion, and the
//! schedules of files.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_core::schedule::{self, RunStatus, SchedulePatch, Source};
use sluice_core::{Clock, ExecutionStatus, FakeClock, Schedule, pipeline};
use sluice_store::engine::Engine;
use sluice_store::{Created, NameClaim, RanNow, RunCursor, Store, StoreConfig, Updated};
use sluice_testkit::RedisServer;
use sluice_testkit::redis::Commands;

/// A minute boundary.
const T0: i64 = 1_700_000_040_000;
const MIN: i64 = 60_000;

const PIPELINE: &str = r#"
id = "tidy"
[[steps]]
name = "run"
kind = "noop"
"#;

async fn engine(redis: &RedisServer, clock: &FakeClock, config: StoreConfig) -> Engine {
    let store = Store::connect(StoreConfig { url: redis.url(), ..config }).await.unwrap();
    let engine = Engine::new(store, Arc::new(clock.clone()));
    let p = pipeline::parse_toml(PIPELINE).unwrap();
    engine.store().put_pipeline(&p, clock.now_ms()).await.unwrap();
    engine
}

fn spec(body: serde_json::Value) -> schedule::ScheduleSpec {
    schedule::parse_spec(&body, "", None).unwrap()
}

async fn create(engine: &Engine, body: serde_json::Value) -> Schedule {
    match engine.create_schedule(spec(body), Source::Api).await.unwrap() {
        Created::Created(s) => *s,
        other => panic!("not created: {other:?}"),
    }
}

#[tokio::test]
async fn a_schedule_is_created_once_per_name_and_found_by_id_or_name() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock, StoreConfig::default()).await;
    let s = create(&engine, json!({"name": "tidy-up", "pipeline": "tidy", "cron": "* * * * *"})).await;
    assert!(s.id.starts_with("sch_0_"), "{}", s.id);
    assert_eq!((s.rev, s.next_run_at, s.target.as_str()), (1, Some(T0 + MIN), "schedule:tidy-up"));
    let stored = engine.find_schedule("tidy-up").await.unwrap().unwrap();
    assert_eq!(stored, s);
    assert_eq!(engine.find_schedule(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(engine.find_schedule("nope").await.unwrap(), None);

    let again = engine.create_schedule(spec(json!({"name": "tidy-up", "pipeline": "tidy", "every": "1h"})), Source::Api).await.unwrap();
    assert_eq!(again, Created::NameTaken(s.id.clone()));
    let missing = engine.create_schedule(spec(json!({"name": "x", "pipeline": "nope", "every": "1h"})), Source::Api).await.unwrap();
    assert!(matches!(&missing, Created::Invalid(p) if p[0].field == "pipeline"), "{missing:?}");

    // A name claim left behind by a create cut short names nothing and is taken over.
    let store = engine.store();
    let ghost = "sch_0_01JD0000000000000000000000";
    assert_eq!(store.claim_schedule_name("orphan", ghost, None, Source::Api).await.unwrap(), NameClaim::Claimed);
    let taken = create(&engine, json!({"name": "orphan", "pipeline": "tidy", "every": "1h"})).await;
    assert_eq!(store.schedule_id_by_name("orphan").await.unwrap(), Some(taken.id));
    assert_eq!(store.schedule_names(None, 10).await.unwrap(), ["orphan", "tidy-up"]);
    assert_eq!(store.schedule_names(Some("orphan"), 10).await.unwrap(), ["tidy-up"]);
}

#[tokio::test]
async fn disabling_takes_a_schedule_out_of_the_due_set_and_re_enabling_skips_the_stale_due_time() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock, StoreConfig::default()).await;
    let s = create(&engine, json!({"name": "n", "pipeline": "tidy", "cron": "* * * * *"})).await;
    let off = SchedulePatch { enabled: Some(false), ..SchedulePatch::default() };
    let Updated::Updated(disabled) = engine.update_schedule(&s.id, &off).await.unwrap() else { panic!() };
    assert_eq!((disabled.enabled, disabled.next_run_at, disabled.rev), (false, None, 2));
    let mut raw = redis.conn();
    let due: Vec<String> = raw.zrange("{sluice:0}:schs:due", 0, -1).unwrap();
    assert!(due.is_empty(), "{due:?}");

    // Ten minutes later: the due times in between are not fired; the next one after now is.
    clock.advance(10 * MIN);
    let (report, _) = engine.fire_due(0, clock.now_ms(), 100).await.unwrap();
    assert_eq!(report.fired, 0);
    let on = SchedulePatch { enabled: Some(true), ..SchedulePatch::default() };
    let Updated::Updated(enabled) = engine.update_schedule(&s.id, &on).await.unwrap() else { panic!() };
    assert_eq!(enabled.next_run_at, Some(T0 + 11 * MIN));
    let due: Vec<(String, f64)> = raw.zrange_withscores("{sluice:0}:schs:due", 0, -1).unwrap();
    assert_eq!(due, [(s.id.clone(), (T0 + 11 * MIN) as f64)]);
    let (report, _) = engine.fire_due(0, clock.now_ms(), 100).await.unwrap();
    assert_eq!(report.fired, 0, "nothing is due right after re-enabling");

    // A change that leaves the cadence alone keeps the due time; a stale revision is re-read.
    let patch = SchedulePatch { input: Some(json!({"k": 1})), ..SchedulePatch::default() };
    let Updated::Updated(changed) = engine.update_schedule(&s.id, &patch).await.unwrap() else { panic!() };
    assert_eq!((changed.next_run_at, changed.input.clone(), changed.rev), (Some(T0 + 11 * MIN), json!({"k": 1}), 4));
    let bad = SchedulePatch { cron: Some("nope".into()), ..SchedulePatch::default() };
    assert!(matches!(engine.update_schedule(&s.id, &bad).await.unwrap(), Updated::Invalid(p) if p[0].field == "cron"));
    let gone = SchedulePatch { pipeline: Some("nope".into()), ..SchedulePatch::default() };
    assert!(matches!(engine.update_schedule(&s.id, &gone).await.unwrap(), Updated::Invalid(p) if p[0].field == "pipeline"));
    assert_eq!(engine.update_schedule("sch_0_01JD0000000000000000000000", &patch).await.unwrap(), Updated::NotFound);
}

#[tokio::test]
async fn racing_engines_fire_a_due_time_once() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engines = [
        engine(&redis, &clock, StoreConfig::default()).await,
        engine(&redis, &clock, StoreConfig::default()).await,
        engine(&redis, &clock, StoreConfig::default()).await,
    ];
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(&engines[0], json!({"name": format!("s{i}"), "pipeline": "tidy", "cron": "* * * * *"})).await.id);
    }
    clock.set(T0 + MIN + 10);
    let now = clock.now_ms();
    let reports = futures::future::join_all(engines.iter().map(|e| e.fire_due(0, now, 100))).await;
    let fired: usize = reports.into_iter().map(|r| r.unwrap().0.fired).sum();
    assert_eq!(fired, 20, "each due time fired by exactly one engine");
    for id in &ids {
        let page = engines[0].schedule_runs(id, None, 10).await.unwrap();
        assert_eq!(page.items.len(), 1, "{id}");
        let s = engines[0].store().get_schedule(id).await.unwrap().unwrap();
        assert_eq!((s.last_run_at, s.next_run_at), (Some(now), Some(T0 + 2 * MIN)));
    }
    // Fired again in the same minute: nothing is due.
    let (report, looked) = engines[1].fire_due(0, now, 100).await.unwrap();
    assert_eq!((report.fired, looked), (0, 0));
}

#[tokio::test]
async fn history_pages_newest_first_and_rows_show_their_executions_outcome() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock, StoreConfig::default()).await;
    let s = create(&engine, json!({"name": "n", "pipeline": "tidy", "every": "1h", "overlap": "allow"})).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        clock.advance(1_000);
        match engine.run_now(&s.id).await.unwrap() {
            RanNow::Fired { run, schedule } => {
                assert_eq!(schedule.last_run_at, Some(clock.now_ms()));
                assert_eq!(schedule.next_run_at, s.cadence.next_after_fire(clock.now_ms()), "run-now advances the cadence");
                runs.push(run);
            }
            other => panic!("{other:?}"),
        }
    }
    let first = engine.schedule_runs(&s.id, None, 2).await.unwrap();
    let ids: Vec<&str> = first.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [runs[4].id.as_str(), runs[3].id.as_str()]);
    let cursor = first.next_cursor.clone().unwrap();
    let second = engine.schedule_runs(&s.id, Some(&RunCursor::parse(&cursor.to_string()).unwrap()), 10).await.unwrap();
    let ids: Vec<&str> = second.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [runs[2].id.as_str(), runs[1].id.as_str(), runs[0].id.as_str()]);
    assert_eq!(second.next_cursor, None);
    assert!(second.items.iter().all(|r| r.status == RunStatus::Running && r.trigger == schedule::Trigger::RunNow));

    // The executions' outcomes show on their rows: cancel one.
    let exec = runs[0].execution_id.clone().unwrap();
    let op = sluice_core::control::Operator { subject: "t".into(), reason: None };
    engine.act(&exec, sluice_core::control::Action::Cancel, &op).await.unwrap();
    let page = engine.schedule_runs(&s.id, None, 10).await.unwrap();
    let row = page.items.iter().find(|r| r.execution_id.as_deref() == Some(exec.as_str())).unwrap();
    assert_eq!(row.status, RunStatus::Cancelled);
    assert_eq!(row.finished_at, Some(clock.now_ms()));
    let e = engine.store().get_execution(&exec).await.unwrap().unwrap();
    assert_eq!((e.status, e.target.as_deref()), (ExecutionStatus::Cancelled, Some(format!("schedule:n#n@{}", runs[0].at).as_str())));
}

#[tokio::test]
async fn history_older_than_the_retention_is_pruned_and_deletion_removes_everything() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let config = StoreConfig { schedule_history_retention: Duration::from_secs(3600), ..StoreConfig::default() };
    let engine = engine(&redis, &clock, config).await;
    let s = create(&engine, json!({"name": "n", "pipeline": "tidy", "every": "1h", "overlap": "allow"})).await;
    let RanNow::Fired { run: old, .. } = engine.run_now(&s.id).await.unwrap() else { panic!() };
    clock.advance(3_600_001);
    let RanNow::Fired { run: new, .. } = engine.run_now(&s.id).await.unwrap() else { panic!() };
    let page = engine.schedule_runs(&s.id, None, 10).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [new.id.as_str()], "{} is older than the retention", old.id);
    let mut raw = redis.conn();
    let rows: usize = raw.hlen(format!("{{sluice:0}}:sch:{}:rows", s.id)).unwrap();
    assert_eq!(rows, 1, "the pruned row left the rows hash too");
    let ttl: i64 = raw.pttl(format!("{{sluice:0}}:sch:{}:runs", s.id)).unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "the history expires with the retention when nothing new is written: {ttl}");

    assert!(engine.delete_schedule(&s.id).await.unwrap());
    assert!(!engine.delete_schedule(&s.id).await.unwrap());
    assert_eq!(engine.find_schedule("n").await.unwrap(), None);
    assert_eq!(engine.run_now(&s.id).await.unwrap(), RanNow::NotFound);
    let keys: Vec<String> = raw.keys("{sluice:0}:sch*").unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let names: Vec<String> = raw.zrange("{sluice:g}:schedules", 0, -1).unwrap();
    assert!(names.is_empty(), "{names:?}");
    // The name is free again.
    create(&engine, json!({"name": "n", "pipeline": "tidy", "every": "1h"})).await;
}

#[tokio::test]
async fn file_schedules_are_upserted_by_name_and_removed_when_their_file_drops_them() {
    let redis = RedisServer::start();
    let clock = FakeClock::new(T0 + 5);
    let engine = engine(&redis, &clock, StoreConfig::default()).await;
    let api = create(&engine, json!({"name": "by-hand", "pipeline": "tidy", "every": "1h"})).await;
    let specs = vec![
        spec(json!({"name": "a", "pipeline": "tidy", "cron": "0 2 * * *"})),
        spec(json!({"name": "b", "pipeline": "tidy", "every": "6h"})),
        spec(json!({"name": "c", "pipeline": "missing", "every": "6h"})),
    ];
    let problems = engine.sync_file_schedules(specs, true).await.unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].0.as_str(), problems[0].1.field.as_str()), ("c", "pipeline"));
    let a = engine.find_schedule("a").await.unwrap().unwrap();
    assert_eq!(a.source, Source::File);

    // Loaded again: `a` is unchanged (same revision), `b` is gone, `by-hand` is untouched.
    clock.advance(MIN);
    // Without deletion (a file had problems), `b` stays.
    let only_a = || vec![spec(json!({"name": "a", "pipeline": "tidy", "cron": "0 2 * * *"}))];
    assert!(engine.sync_file_schedules(only_a(), false).await.unwrap().is_empty());
    assert!(engine.find_schedule("b").await.unwrap().is_some());
    let problems = engine.sync_file_schedules(only_a(), true).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(engine.find_schedule("a").await.unwrap().unwrap().rev, a.rev);
    assert_eq!(engine.find_schedule("b").await.unwrap(), None);
    assert_eq!(engine.find_schedule("by-hand").await.unwrap().unwrap(), api);

    // A change in the file is applied, keeping the schedule's id.
    engine
        .sync_file_schedules(vec![spec(json!({"name": "a", "pipeline": "tidy", "cron": "0 3 * * *", "target": "repo:x"}))], true)
        .await
        .unwrap();
    let changed = engine.find_schedule("a").await.unwrap().unwrap();
    assert_eq!((changed.id.as_str(), changed.target.as_str(), changed.cadence.cron_expr()), (a.id.as_str(), "repo:x", Some("0 3 * * *")));
    assert_ne!(changed.next_run_at, a.next_run_at);
}
