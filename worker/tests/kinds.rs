//! Gates and timers against a real Redis and a real worker: a gate waits without holding a
//! worker slot, calls its helper when the probe fails, and follows its exhaustion policy; a
//! sleep is a delayed job, not a sleeping worker.

mod common;

use common::{Kit, count};
use serde_json::json;
use sluice_core::job::NewJob;
use sluice_core::{ExecutionStatus, FailureKind, StepStatus};

/// A probe script: appends a line to `counter`, then answers pending (exit 75) until its
/// `n`-th run, and pass (exit 0) from then on, writing a summary.
fn probe_passing_at(counter: &str, n: usize) -> String {
    format!(
        "echo x >> {counter}; runs=$(wc -l < {counter}); printf '{{\"summary\":\"run %s\"}}' \"$runs\" > \"$SLUICE_OUTPUT\"; [ \"$runs\" -ge {n} ] || exit 75"
    )
}

/// A gate step over `probe` (a shell script) with `extra` options.
fn gate_pipeline(id: &str, probe: &str, extra: &str) -> String {
    format!(
        r#"
id = "{id}"
[[steps]]
name = "ci"
kind = "gate"
probe = {{ run = ["sh", "-c", {probe:?}] }}
interval = "1s"
{extra}
[[steps]]
name = "after"
kind = "noop"
output = "done"
"#
    )
}

/// Standalone jobs that only append to `file`.
fn side_jobs(file: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            let id = sluice_core::ids::new_id(sluice_core::ids::JOB, 0);
            NewJob::new(id, "default", "command", json!({ "run": ["sh", "-c", format!("echo {i} >> {file}")] }))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_gate_holds_no_worker_slot_and_passes_at_the_third_probe() {
    let kit = Kit::with_concurrency(1).await;
    let (probes, side) = (kit.path("probes"), kit.path("side"));
    let id = kit.start(&gate_pipeline("wait-ci", &probe_passing_at(&probes, 3), "max_polls = 10")).await;
    kit.wait_for(&id, "the first probe to answer pending", |e| {
        e.steps[0].gate.as_ref().is_some_and(|g| g.polls == 1)
    })
    .await;
    // While the gate waits for its next probe, the only worker slot runs other work.
    kit.engine.store().enqueue(&side_jobs(&side, 5), kit.engine.now()).await.unwrap();
    let done = kit.wait_for(&id, "the execution to complete", |e| !e.status.is_live()).await;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:#?}");
    assert_eq!(count(&probes), 3, "the probe ran three times");
    assert_eq!(count(&side), 5, "the side jobs ran while the gate waited");
    let gate = done.steps[0].gate.clone().unwrap();
    assert_eq!((gate.polls, gate.log.len()), (3, 3));
    assert_eq!(done.steps[0].output.as_ref().unwrap()["summary"], "run 3");
    // The probes were a second apart: the gate waited between them.
    let at: Vec<i64> = gate.log.iter().map(|l| l.at).collect();
    assert!(at[1] - at[0] >= 900 && at[2] - at[1] >= 900, "{at:?}");
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_runs_when_the_probe_fails_and_attempts_are_bounded() {
    let kit = Kit::new().await;
    // The probe fails until `fixed` exists; the helper creates it on its second run.
    let (fixed, helper_runs) = (kit.path("fixed"), kit.path("helper-runs"));
    let probe = format!("[ -e {fixed} ] && exit 0; echo 'checks red: lint'; exit 1");
    let helper = format!(
        r#"helper = {{ kind = "command", run = ["sh", "-c", "echo x >> {helper_runs}; [ $(wc -l < {helper_runs}) -ge 2 ] && touch {fixed}; true"] }}"#
    );
    let id = kit.start(&gate_pipeline("fixable", &probe, &format!("max_polls = 5\nmax_attempts = 2\n{helper}"))).await;
    let done = kit.wait_for(&id, "the execution to settle", |e| !e.status.is_live()).await;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:#?}");
    assert_eq!(count(&helper_runs), 2);
    assert_eq!(done.steps[0].gate.as_ref().unwrap().helper_attempts, 2);

    // One helper run is not enough: the execution fails naming the gate and the summary.
    let (fixed, helper_runs) = (kit.path("fixed-2"), kit.path("helper-runs-2"));
    let probe = format!("[ -e {fixed} ] && exit 0; echo 'checks red: lint'; exit 1");
    let helper = format!(
        r#"helper = {{ kind = "command", run = ["sh", "-c", "echo x >> {helper_runs}; [ $(wc -l < {helper_runs}) -ge 2 ] && touch {fixed}; true"] }}"#
    );
    let id = kit.start(&gate_pipeline("unfixable", &probe, &format!("max_polls = 5\nmax_attempts = 1\n{helper}"))).await;
    let done = kit.wait_for(&id, "the execution to settle", |e| !e.status.is_live()).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    let failure = done.failure.clone().unwrap();
    assert_eq!(failure.kind, FailureKind::JobFailed);
    assert!(failure.message.contains("gate `ci`") && failure.message.contains("checks red: lint"), "{}", failure.message);
    assert_eq!(count(&helper_runs), 1);
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_fails_passes_after_the_watch_window_or_rearms() {
    let kit = Kit::new().await;
    let never = "exit 75";
    let fail = kit.start(&gate_pipeline("ex-fail", never, "max_polls = 2\non_exhausted = \"fail\"")).await;
    let watch = kit.start(&gate_pipeline("ex-pass", never, "max_polls = 1\non_exhausted = \"pass\"\nwatch_window = \"3s\"")).await;
    let probes = kit.path("rearm-probes");
    let rearm = kit.start(&gate_pipeline("ex-rearm", &probe_passing_at(&probes, 5), "max_polls = 1\non_exhausted = \"rearm\"")).await;

    let failed = kit.wait_for(&fail, "the `fail` gate to settle", |e| !e.status.is_live()).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(failed.failure.as_ref().unwrap().kind, FailureKind::Timeout);

    let watched = kit.wait_for(&watch, "the `pass` gate to settle", |e| !e.status.is_live()).await;
    assert_eq!(watched.status, ExecutionStatus::Completed);
    let since = watched.steps[0].gate.as_ref().unwrap().since;
    assert!(watched.steps[0].finished_at.unwrap() - since >= 3_000, "passed only after the window");

    // Past its budget, the `rearm` gate keeps the execution running until the probe passes.
    kit.wait_for(&rearm, "the `rearm` gate to spend its budget", |e| {
        e.steps[0].gate.as_ref().is_some_and(|g| g.polls >= 3)
    })
    .await;
    assert_eq!(kit.get(&rearm).await.status, ExecutionStatus::Running);
    let rearmed = kit.wait_for(&rearm, "the `rearm` gate to pass", |e| !e.status.is_live()).await;
    assert_eq!(rearmed.status, ExecutionStatus::Completed);
    assert_eq!(count(&probes), 5);
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_step_waits_as_a_delayed_job() {
    let kit = Kit::with_concurrency(1).await;
    let id = kit
        .start(
            r#"
id = "nap"
[[steps]]
name = "nap"
kind = "sleep"
for = "2s"
[[steps]]
name = "after"
kind = "noop"
"#,
        )
        .await;
    let waiting = kit.get(&id).await;
    assert_eq!(waiting.steps[0].status, StepStatus::Waiting);
    let wake = waiting.steps[0].wake_at.unwrap();
    let side = kit.path("side");
    kit.engine.store().enqueue(&side_jobs(&side, 3), kit.engine.now()).await.unwrap();
    let done = kit.wait_for(&id, "the execution to complete", |e| !e.status.is_live()).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert!(done.steps[0].finished_at.unwrap() >= wake, "not before its wake time");
    assert_eq!(count(&side), 3, "the worker's one slot was free during the sleep");
    kit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_errors_in_a_row_fail_the_gate_with_the_last_error() {
    let kit = Kit::new().await;
    let id = kit
        .start(&gate_pipeline("stuck-probe", "sleep 5", "max_polls = 10\nmax_probe_errors = 2\ntimeout = \"1s\""))
        .await;
    let done = kit.wait_for(&id, "the execution to settle", |e| !e.status.is_live()).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    let failure = done.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert!(failure.message.contains("no verdict 2 time(s) in a row"), "{}", failure.message);
    kit.shutdown().await;
}
