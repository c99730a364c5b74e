//! A worker runs pipelines end to end against a real Redis.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_core::execution::StartRequest;
use sluice_core::{ExecutionStatus, StepStatus, SystemClock, pipeline};
use sluice_store::engine::Engine;
use sluice_store::{StartOutcome, Store, StoreConfig};
use sluice_testkit::{RedisServer, wait_until};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

async fn engine(redis: &RedisServer) -> Engine {
    let store = Store::connect(StoreConfig { url: redis.url(), ..StoreConfig::default() }).await.unwrap();
    Engine::new(store, Arc::new(SystemClock))
}

fn spawn_worker(engine: &Engine) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let config = WorkerConfig {
        concurrency: 4,
        lease_ttl: Duration::from_secs(5),
        kill_grace: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(engine.clone(), config).unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move { worker.run(async move { s.cancelled().await }).await });
    (stop, handle)
}

async fn start(engine: &Engine, toml: &str, input: serde_json::Value) -> String {
    let p = pipeline::parse_toml(toml).unwrap();
    let (version, _) = engine.store().put_pipeline(&p, engine.now()).await.unwrap();
    let req = StartRequest { pipeline: p, pipeline_version: version, input, target: None, idempotency_key: None };
    match engine.store().start_execution(req, engine.now()).await.unwrap() {
        StartOutcome::Started(e) => e.id,
        other => panic!("{other:?}"),
    }
}

async fn wait_terminal(engine: &Engine, id: &str) -> sluice_core::Execution {
    wait_until(Duration::from_secs(30), "the execution to settle", || async {
        let e = engine.store().get_execution(id).await.unwrap().unwrap();
        (!e.status.is_live()).then_some(e)
    })
    .await
}

#[tokio::test]
async fn three_command_steps_pass_outputs_through_context_and_placeholders() {
    let redis = RedisServer::start();
    let engine = engine(&redis).await;
    let (stop, handle) = spawn_worker(&engine);
    let toml = r#"
id = "three"
[[steps]]
name = "first"
kind = "command"
run = ["sh", "-c", "printf '{\"sha\":\"abc123\",\"n\":%s}' \"$SLUICE_ATTEMPT\" > \"$SLUICE_OUTPUT\""]
[[steps]]
name = "second"
kind = "command"
run = ["sh", "-c", "python3 -c 'import json,os; c=json.load(open(os.environ[\"SLUICE_CONTEXT\"])); print(json.dumps({\"seen\": c[\"steps\"][\"first\"][\"output\"][\"sha\"], \"who\": c[\"input\"][\"who\"]}))' > \"$SLUICE_OUTPUT\""]
[[steps]]
name = "third"
kind = "command"
run = ["sh", "-c", "printf '{\"echo\":\"%s-%s\"}' \"$1\" \"$2\" > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.first.output.sha }}", "{{ input.who }}"]
"#;
    let id = start(&engine, toml, json!({"who": "ops"})).await;
    let exec = wait_terminal(&engine, &id).await;
    assert_eq!(exec.status, ExecutionStatus::Completed, "{exec:#?}");
    assert_eq!(exec.steps[0].output, Some(json!({"sha": "abc123", "n": 1})));
    assert_eq!(exec.steps[1].output, Some(json!({"seen": "abc123", "who": "ops"})));
    assert_eq!(exec.steps[2].output, Some(json!({"echo": "abc123-ops"})));
    assert!(exec.steps.iter().all(|s| s.status == StepStatus::Succeeded && s.attempts == 1));
    assert!(exec.finished_at.is_some());
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_step_that_fails_twice_then_succeeds_completes_under_three_attempts() {
    let redis = RedisServer::start();
    let engine = engine(&redis).await;
    let (stop, handle) = spawn_worker(&engine);
    let toml = r#"
id = "flaky"
[[steps]]
name = "flaky"
kind = "command"
run = ["sh", "-c", "if [ \"$SLUICE_ATTEMPT\" -lt 3 ]; then echo boom-$SLUICE_ATTEMPT >&2; exit 3; fi"]
retry = { max_attempts = 3, backoff = "fixed", initial = "300ms", jitter = false }
"#;
    let id = start(&engine, toml, json!({})).await;
    let exec = wait_terminal(&engine, &id).await;
    assert_eq!(exec.status, ExecutionStatus::Completed, "{exec:#?}");
    assert_eq!(exec.steps[0].attempts, 3);
    let job = engine.store().get_job(exec.steps[0].job_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.attempts, 3);
    // The configured backoff separates the attempts: the last one started at least two
    // backoffs after the execution began.
    assert!(job.started_at.unwrap() - exec.started_at >= 600, "{job:#?}");
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_step_that_keeps_failing_fails_the_execution_with_a_failure_record() {
    let redis = RedisServer::start();
    let engine = engine(&redis).await;
    let (stop, handle) = spawn_worker(&engine);
    let toml = r#"
id = "broken"
[[steps]]
name = "build"
kind = "command"
run = ["sh", "-c", "echo compiling; echo 'error: missing semicolon' >&2; exit 2"]
retry = { max_attempts = 2, backoff = "fixed", initial = "100ms", jitter = false }
[[steps]]
name = "never"
kind = "noop"
"#;
    let id = start(&engine, toml, json!({})).await;
    let exec = wait_terminal(&engine, &id).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    let failure = exec.failure.unwrap();
    assert_eq!(failure.kind, sluice_core::FailureKind::JobFailed);
    assert_eq!(failure.step.as_deref(), Some("build"));
    assert_eq!(failure.exit_code, Some(2));
    assert!(failure.stderr_tail.unwrap().contains("missing semicolon"));
    assert!(failure.message.contains("2 attempt"), "{}", failure.message);
    assert_eq!(exec.steps[1].status, StepStatus::Pending);
    stop.cancel();
    handle.await.unwrap();
}
