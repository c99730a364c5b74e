//! Operator actions against a real Redis and a real worker: retry resumes at the failed step,
//! cancel kills a running command wherever it runs (and its worker counts the attempt as
//! cancelled), pause holds the next step until resume, restart keeps earlier outputs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Kit, applied, count};
use serde_json::json;
use sluice_core::control::{Action, Refusal};
use sluice_core::{ExecutionStatus, FailureKind, JobStatus, StepStatus};
use sluice_store::engine::Acted;
use sluice_testkit::metrics::Scrape;
use sluice_testkit::redis::Commands;
use sluice_testkit::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_resumes_at_the_failed_step_and_never_reruns_succeeded_ones() {
    let kit = Kit::new().await;
    let (c1, c2, c3, c4, flag) = (kit.path("c1"), kit.path("c2"), kit.path("c3"), kit.path("c4"), kit.path("flag"));
    let toml = format!(
        r#"
id = "four"
[[steps]]
name = "one"
kind = "command"
run = ["sh", "-c", "echo x >> {c1}; printf '{{\"v\":1}}' > \"$SLUICE_OUTPUT\""]
[[steps]]
name = "two"
kind = "command"
run = ["sh", "-c", "echo x >> {c2}"]
[[steps]]
name = "three"
kind = "command"
run = ["sh", "-c", "echo x >> {c3}; [ -e {flag} ] || {{ touch {flag}; echo 'first time fails' >&2; exit 4; }}"]
retry = {{ max_attempts = 1 }}
[[steps]]
name = "four"
kind = "command"
run = ["sh", "-c", "echo x >> {c4}"]
"#
    );
    let id = kit.start(&toml).await;
    let failed = kit.wait_for(&id, "the first run to fail", |e| e.status == ExecutionStatus::Failed).await;
    assert_eq!(failed.failure.as_ref().unwrap().step.as_deref(), Some("three"));

    // Only failed or cancelled executions can be retried.
    let running = kit.start("id = \"slow\"\n[[steps]]\nname = \"s\"\nkind = \"command\"\nrun = [\"sleep\", \"5\"]").await;
    assert_eq!(kit.act(&running, Action::Retry).await, Acted::Refused(Refusal::NotRetryable(ExecutionStatus::Running)));
    assert!(matches!(kit.act(&running, Action::Cancel).await, Acted::Applied(_)));

    let retried = applied(kit.act(&id, Action::Retry).await);
    assert_eq!(retried.id, id);
    assert_eq!(retried.run, 2);
    let done = kit.wait_for(&id, "the retry to complete", |e| e.status == ExecutionStatus::Completed).await;
    assert_eq!((count(&c1), count(&c2), count(&c3), count(&c4)), (1, 1, 2, 1));
    assert_eq!(done.steps[0].output, Some(json!({"v": 1})), "succeeded steps keep their outputs");
    assert!(done.failure.is_none());
    assert_eq!(done.failure_history.len(), 1);
    assert_eq!(done.failure_history[0].exit_code, Some(4));
    assert_eq!(done.audit.iter().map(|a| (a.action.as_str(), a.actor.as_str())).collect::<Vec<_>>(), [("retry", "alice")]);
    assert_eq!(kit.act(&id, Action::Retry).await, Acted::Refused(Refusal::NotRetryable(ExecutionStatus::Completed)));
    assert!(kit.events_of(&id).contains(&"execution.retried".to_string()));
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_running_command_and_a_late_result_changes_nothing() {
    let kit = Kit::new().await;
    let pidfile = kit.path("pid");
    let toml = format!(
        "id = \"sleepy\"\n[[steps]]\nname = \"nap\"\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"echo $$ > {pidfile}; exec sleep 600\"]\n"
    );
    let id = kit.start(&toml).await;
    let pid: u32 = wait_until(Duration::from_secs(20), "the command to start", || async {
        std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok())
    })
    .await;
    let job = kit.get(&id).await.steps[0].job_id.clone().unwrap();
    assert_eq!(kit.engine.store().get_job(&job).await.unwrap().unwrap().status, JobStatus::Running);

    let cancelled = applied(kit.act(&id, Action::Cancel).await);
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    let began = std::time::Instant::now();
    wait_until(Duration::from_secs(5), "the command's process to be gone", || async {
        (!sluice_testkit::process::is_alive(pid)).then_some(())
    })
    .await;
    assert!(began.elapsed() < Duration::from_secs(3), "the process outlived the grace period");

    // The worker settles the stopped attempt; the execution does not move.
    let settled = wait_until(Duration::from_secs(10), "the stopped job to settle", || async {
        let j = kit.engine.store().get_job(&job).await.unwrap().unwrap();
        (j.status == JobStatus::Failed).then_some(j)
    })
    .await;
    assert!(settled.last_error.unwrap().message.contains("stopped"));
    // The worker's metrics count the stopped attempt as cancelled, not failed.
    let metrics = wait_until(Duration::from_secs(5), "the stopped attempt to be counted", || async {
        let scrape = Scrape::parse(&kit.engine.metrics().render(None));
        (scrape.counter("sluice_jobs_total", &[("outcome", "cancelled")]) > 0.0).then_some(scrape)
    })
    .await;
    assert_eq!(metrics.counter("sluice_jobs_total", &[("kind", "command"), ("outcome", "cancelled")]), 1.0);
    assert_eq!(metrics.counter("sluice_jobs_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(metrics.histogram_count("sluice_job_duration_seconds", &[("kind", "command")]), 1.0);
    let after = kit.get(&id).await;
    assert_eq!(after.status, ExecutionStatus::Cancelled);
    assert_eq!(after.rev, cancelled.rev, "a late result changed the cancelled execution");
    assert_eq!(after.failure.as_ref().unwrap().kind, FailureKind::Cancelled);

    // Cancel is idempotent on a terminal execution.
    match kit.act(&id, Action::Cancel).await {
        Acted::Unchanged(e) => assert_eq!(e.rev, after.rev),
        other => panic!("{other:?}"),
    }
    let events = kit.events_of(&id);
    for expected in ["execution.cancelled", "job.cancel_requested", "job.failed"] {
        assert!(events.contains(&expected.to_string()), "{expected} missing from {events:?}");
    }
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_next_step_until_resume() {
    let kit = Kit::new().await;
    let gate = kit.path("gate");
    let c2 = kit.path("c2");
    let toml = format!(
        r#"
id = "paused"
[[steps]]
name = "one"
kind = "command"
run = ["sh", "-c", "while [ ! -e {gate} ]; do sleep 0.05; done; printf '{{\"done\":1}}' > \"$SLUICE_OUTPUT\""]
[[steps]]
name = "two"
kind = "command"
run = ["sh", "-c", "echo x >> {c2}"]
[[steps]]
name = "three"
kind = "noop"
"#
    );
    let id = kit.start(&toml).await;
    let job = kit.get(&id).await.steps[0].job_id.clone().unwrap();
    wait_until(Duration::from_secs(20), "step one to run", || async {
        (kit.engine.store().get_job(&job).await.unwrap().unwrap().status == JobStatus::Running).then_some(())
    })
    .await;
    let paused = applied(kit.act(&id, Action::Pause).await);
    assert_eq!(paused.status, ExecutionStatus::Paused);
    assert_eq!(kit.act(&id, Action::Pause).await, Acted::Refused(Refusal::NotPausable(ExecutionStatus::Paused)));

    std::fs::write(&gate, "").unwrap();
    let at_boundary = kit.wait_for(&id, "step one's result to be recorded", |e| e.steps[0].status == StepStatus::Succeeded).await;
    assert_eq!(at_boundary.status, ExecutionStatus::Paused);
    assert_eq!(at_boundary.steps[0].output, Some(json!({"done": 1})));
    assert_eq!(at_boundary.steps[1].status, StepStatus::Pending);
    assert!(at_boundary.steps[1].job_id.is_none(), "step two got a job while paused");
    // No job of the execution is queued, delayed or held: nothing can run step two.
    let mut conn = kit.redis.conn();
    for key in ["{sluice:0}:q:default:ready", "{sluice:0}:q:default:delayed", "{sluice:0}:leased"] {
        let n: usize = conn.zcard(key).unwrap();
        assert_eq!(n, 0, "{key} holds a job while paused");
    }
    assert_eq!(count(&c2), 0, "step two ran while paused");

    let resumed = applied(kit.act(&id, Action::Resume).await);
    assert_eq!(resumed.status, ExecutionStatus::Running);
    kit.wait_for(&id, "the execution to complete", |e| e.status == ExecutionStatus::Completed).await;
    assert_eq!(count(&c2), 1);
    assert_eq!(kit.act(&id, Action::Resume).await, Acted::Refused(Refusal::NotPaused(ExecutionStatus::Completed)));
    let events = kit.events_of(&id);
    let pos = |t: &str| events.iter().position(|e| e == t).unwrap_or_else(|| panic!("{t} missing from {events:?}"));
    assert!(pos("workflow.instance.paused") < pos("workflow.instance.resumed"));
    assert!(pos("workflow.instance.resumed") < pos("execution.completed"));
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_a_step_keeps_earlier_outputs_and_records_the_reset_ones() {
    let kit = Kit::new().await;
    let c1 = kit.path("c1");
    let toml = format!(
        r#"
id = "again"
[[steps]]
name = "one"
kind = "command"
run = ["sh", "-c", "echo x >> {c1}; printf '{{\"n\":1}}' > \"$SLUICE_OUTPUT\""]
[[steps]]
name = "two"
kind = "command"
run = ["sh", "-c", "printf '{{\"attempt\":%s}}' \"$SLUICE_RUN\" > \"$SLUICE_OUTPUT\""]
"#
    );
    let id = kit.start(&toml).await;
    kit.wait_for(&id, "the first run", |e| e.status == ExecutionStatus::Completed).await;
    match kit.act(&id, Action::Restart { from: 2 }).await {
        Acted::Refused(Refusal::StepOutOfRange(m)) => assert!(m.contains("out of range"), "{m}"),
        other => panic!("{other:?}"),
    }
    let restarted = applied(kit.act(&id, Action::Restart { from: 1 }).await);
    assert_eq!(restarted.run, 2);
    let done = kit.wait_for(&id, "the restarted run", |e| e.status == ExecutionStatus::Completed && e.run == 2).await;
    assert_eq!(count(&c1), 1, "a step before the restart point ran again");
    assert_eq!(done.steps[1].output, Some(json!({"attempt": 2})));
    assert_eq!(done.output_history.len(), 1);
    assert_eq!(done.output_history[0].output, json!({"attempt": 1}));
    assert!(Path::new(&c1).exists());
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executions_own_event_list_keeps_its_newest_thousand_events() {
    let kit = Kit::new().await;
    let id = kit.start("id = \"nap\"\n[[steps]]\nname = \"nap\"\nkind = \"sleep\"\nfor = \"1h\"").await;
    let before = kit.events_of(&id).len();
    // Each pause and each resume appends one event to the execution's list.
    let rounds = 510;
    for _ in 0..rounds {
        applied(kit.act(&id, Action::Pause).await);
        applied(kit.act(&id, Action::Resume).await);
    }
    assert!(before + 2 * rounds > 1_000, "the test must go over the cap");
    let events = kit.events_of(&id);
    assert_eq!(events.len(), 1_000, "the list is capped at its newest 1 000 events");
    assert_eq!(events.last().map(String::as_str), Some("workflow.instance.resumed"));
    assert!(!events.iter().any(|e| e == "execution.started"), "the oldest events were trimmed");
}
