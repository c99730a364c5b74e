//! Schedules with the real binary: three `sluice scheduler` processes fire 200 schedules
//! due one after the other, one of them SIGKILLed half-way, and every due time starts
//! exactly one execution; and the CLI manages schedules against `sluice api`, which loads the
//! schedules of its pipeline files at start.

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use common::{Setup, cli, events, stderr, stdout, wait_for_api};
use serde_json::{Value, json};
use sluice_core::pipeline;
use sluice_core::schedule::{self, NextRun, Source};
use sluice_store::Created;
use sluice_store::engine::Engine;
use sluice_testkit::{free_port, wait_until};

const SCHEDULES: usize = 200;

const NOOP: &str = r#"
id = "tidy"
[[steps]]
name = "run"
kind = "noop"
"#;

/// How many `schedule.fired` events each schedule has, and the execution ids they name.
fn fired(setup: &Setup) -> (HashMap<String, Vec<Value>>, Vec<String>) {
    let mut conn = setup.raw();
    let all = events(&mut conn);
    let mut per_schedule: HashMap<String, Vec<Value>> = HashMap::new();
    for e in all.iter().filter(|e| e.kind == "schedule.fired") {
        per_schedule.entry(e.data["schedule_id"].as_str().unwrap().to_string()).or_default().push(e.data.clone());
    }
    let started = all
        .iter()
        .filter(|e| e.kind == "execution.started")
        .map(|e| e.data["execution_id"].as_str().unwrap().to_string())
        .collect();
    (per_schedule, started)
}

/// Creates `n` yearly schedules of `tidy` and makes schedule `i` due at `first + i * step`.
async fn due_schedules(engine: &Engine, n: usize, first: i64, step: i64) -> Vec<(String, i64)> {
    let p = pipeline::parse_toml(NOOP).unwrap();
    engine.store().put_pipeline(&p, engine.now()).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let body = json!({"name": format!("s{i:03}"), "pipeline": "tidy", "cron": "0 0 1 1 *"});
        let spec = schedule::parse_spec(&body, "", None).unwrap();
        let Created::Created(s) = engine.create_schedule(spec, Source::Api).await.unwrap() else { panic!("not created") };
        let due = first + i64::try_from(i).unwrap() * step;
        engine.store().put_schedule(&s, s.rev, NextRun::Set(Some(due)), engine.now()).await.unwrap();
        out.push((s.id, due));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scheduler_processes_fire_each_due_time_once_while_one_is_sigkilled() {
    let setup = Setup::new("concurrency = 1");
    let engine = setup.engine().await;
    // Due one every 20 ms over four seconds, starting two seconds from now.
    let first = engine.now() + 2_000;
    let schedules = due_schedules(&engine, SCHEDULES, first, 20).await;
    let mut schedulers: Vec<_> = (0..3).map(|i| setup.spawn("scheduler", &format!("scheduler-{i}"))).collect();

    let count = || fired(&setup).0.len();
    wait_until(Duration::from_secs(30), "a quarter of the schedules to fire", || async { (count() >= SCHEDULES / 4).then_some(()) }).await;
    schedulers[0].kill();
    let at_kill = count();
    assert!(at_kill < SCHEDULES, "every schedule fired before the kill ({at_kill}); the test proved nothing");
    wait_until(Duration::from_secs(30), "every schedule to fire", || async { (count() >= SCHEDULES).then_some(()) }).await;
    // The two left go on ticking: nothing more may fire.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (per_schedule, started) = fired(&setup);
    for (id, due) in &schedules {
        let fires = per_schedule.get(id).unwrap_or_else(|| panic!("{id} never fired"));
        assert_eq!(fires.len(), 1, "{id} fired {} times: {fires:?}", fires.len());
        assert_eq!(fires[0]["due_at"], json!(due), "{id}");
    }
    assert_eq!(started.len(), SCHEDULES, "one execution per fire");
    let mut named: Vec<String> = per_schedule.values().map(|f| f[0]["execution_id"].as_str().unwrap().to_string()).collect();
    named.sort();
    let mut started = started;
    started.sort();
    assert_eq!(named, started, "each fire started the execution it names");
    for (id, _) in &schedules {
        let runs = engine.schedule_runs(id, None, 10).await.unwrap();
        assert_eq!(runs.items.len(), 1, "{id}");
    }
    eprintln!("{SCHEDULES} due times fired once each by 3 schedulers; one SIGKILLed after {at_kill} fires");
    for s in &mut schedulers[1..] {
        s.kill();
    }
}

/// Runs the CLI against `url`; returns its output.
fn run(url: &str, args: &[&str]) -> Output {
    cli(url, args, &[])
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    assert_eq!(out.status.code(), Some(0), "sluice {args:?}\nstdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn json_of(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(url, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sluice {args:?} printed no JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_schedules_and_the_api_loads_those_of_the_files() {
    let port = free_port();
    let setup = Setup::new("concurrency = 1");
    let dir = setup.dir.path().join("pipelines");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("tidy.toml"), format!("{NOOP}\n[[schedules]]\nname = \"tidy-nightly\"\ncron = \"0 3 * * *\"\n")).unwrap();
    std::fs::write(
        dir.join("schedules.toml"),
        "[[schedules]]\nname = \"tidy-often\"\npipeline = \"tidy\"\nevery = \"6h\"\nhours = \"22-6\"\nenabled = false\n",
    )
    .unwrap();
    setup.append(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n\n[pipelines]\ndir = \"pipelines\"\n"));
    let _api = setup.spawn("api", "api");
    let url = format!("http://127.0.0.1:{port}");
    wait_for_api(&url).await;

    // The files' schedules are there, defined by the files.
    let listed = json_of(&url, &["schedule", "list"]);
    let names: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tidy-nightly", "tidy-often"]);
    let nightly = json_of(&url, &["schedule", "get", "tidy-nightly"]);
    assert_eq!((nightly["pipeline"].as_str(), nightly["source"].as_str()), (Some("tidy"), Some("file")));
    let table = ok(&url, &["schedule", "list", "--disabled"]);
    assert!(table.contains("tidy-often") && !table.contains("tidy-nightly"), "{table}");

    // Created from the CLI, fired now, refused while its execution holds the target.
    let created = ok(&url, &["schedule", "create", "web", "--pipeline", "tidy", "--cron", "0 9 * * 1-5", "--tz", "America/New_York", "--target", "repo:web"]);
    assert!(created.starts_with("created schedule sch_"), "{created}");
    let fired = ok(&url, &["schedule", "run-now", "web"]);
    assert!(fired.contains("fired: execution ex_"), "{fired}");
    let busy = run(&url, &["schedule", "run-now", "web"]);
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("TARGET_BUSY (409)"), "{}", stderr(&busy));
    let runs = json_of(&url, &["schedule", "runs", "web"]);
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs["items"][0]["trigger"], "run_now");
    let table = ok(&url, &["schedule", "runs", "web"]);
    assert!(table.contains("run-now") && table.contains("running"), "{table}");

    // Disabled, enabled (the next run from now), shown, deleted.
    assert!(ok(&url, &["schedule", "disable", "web"]).contains("disabled"));
    let off = json_of(&url, &["schedule", "get", "web"]);
    assert_eq!((off["enabled"].as_bool(), off.get("next_run_at")), (Some(false), None));
    assert!(ok(&url, &["schedule", "enable", "web"]).contains("enabled; next run 20"));
    let shown = ok(&url, &["schedule", "get", "web"]);
    assert!(shown.contains("cron 0 9 * * 1-5") && shown.contains("America/New_York"), "{shown}");
    assert!(ok(&url, &["schedule", "delete", "web"]).contains("deleted"));
    let gone = run(&url, &["schedule", "get", "web"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("SCHEDULE_NOT_FOUND (404)"), "{}", stderr(&gone));

    // A refused body names its fields; an unreachable API exits 3.
    let bad = run(&url, &["schedule", "create", "x", "--pipeline", "tidy", "--every", "10s"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("VALIDATION_FAILED") && stderr(&bad).contains("  every: "), "{}", stderr(&bad));
    let unreachable = run(&format!("http://127.0.0.1:{}", free_port()), &["schedule", "list"]);
    assert_eq!(unreachable.status.code(), Some(3), "{}", stderr(&unreachable));
}
