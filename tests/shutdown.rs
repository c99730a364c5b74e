//! Graceful shutdown of the real binary: SIGTERM stops leasing, lets running jobs finish
//! within `worker.shutdown_timeout` and exits 0; a job that outlasts it goes back to
//! `pending` without counting the attempt, and another worker completes it.

mod common;

use std::time::Duration;

use common::{Setup, executions, expect_exit, job_key, job_status, leased_count, ready_ids, start_executions, wait_all_terminal};
use sluice_core::ExecutionStatus;
use sluice_store::engine::Engine;
use sluice_testkit::process::SIGTERM;
use sluice_testkit::redis::Commands;
use sluice_testkit::wait_until;

/// One command step that runs for `secs` and records which worker process ran it (each
/// worker is started with its own `WORKER_MARK`, which its commands inherit).
fn pipeline(id: &str, secs: &str) -> String {
    format!(
        r#"
id = "{id}"
[[steps]]
name = "work"
kind = "command"
run = ["sh", "-c", "sleep {secs}; printf '{{\"by\":\"%s\"}}' \"$WORKER_MARK\" > \"$SLUICE_OUTPUT\""]
"#
    )
}

/// Waits until the first step's job of each execution is running, returning the job ids.
/// (The stored execution shows a step `queued` until it settles; the API folds the live job
/// state into its view, and the test reads the job itself.)
async fn wait_running(setup: &Setup, engine: &Engine, ids: &[String]) -> Vec<String> {
    wait_until(Duration::from_secs(20), "the step jobs to be running", || async {
        let all = executions(engine, ids).await;
        let mut conn = setup.raw();
        all.iter()
            .map(|e| {
                let job = e.steps[0].job_id.clone()?;
                (job_status(&mut conn, &job).as_deref() == Some("running")).then_some(job)
            })
            .collect::<Option<Vec<String>>>()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_stops_leasing_and_exits_zero() {
    let setup = Setup::new("concurrency = 3\nshutdown_timeout = \"20s\"");
    let engine = setup.engine().await;
    let mut worker = setup.spawn_env("worker", "worker-a", &[("WORKER_MARK", "a")]);
    let ids = start_executions(&engine, &pipeline("slow", "1.5"), 3).await;
    let jobs = wait_running(&setup, &engine, &ids).await;

    worker.signal(SIGTERM);
    // Work that arrives while the worker drains is left for others.
    let late = start_executions(&engine, &pipeline("late", "0"), 1).await;
    let status = expect_exit(&mut worker, Duration::from_secs(15), "the draining worker").await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{}", setup.log_tail("worker-a", 20));

    for e in executions(&engine, &ids).await {
        assert_eq!(e.status, ExecutionStatus::Completed, "{} {:?}", e.id, e.failure);
        assert_eq!(e.steps[0].output, Some(serde_json::json!({ "by": "a" })));
        assert_eq!(e.steps[0].attempts, 1);
    }
    let mut conn = setup.raw();
    for job in &jobs {
        assert_eq!(job_status(&mut conn, job).as_deref(), Some("completed"));
    }
    let late = &executions(&engine, &late).await[0];
    assert_eq!(late.status, ExecutionStatus::Running);
    let late_job = late.steps[0].job_id.clone().expect("the late step has a job");
    assert_eq!(job_status(&mut conn, &late_job).as_deref(), Some("pending"), "the drained worker took new work");
    assert_eq!(leased_count(&mut conn), 0, "a lease left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlasting_shutdown_timeout_returns_to_pending_and_another_worker_completes_it() {
    let setup = Setup::new("concurrency = 2\nshutdown_timeout = \"1s\"\nkill_grace = \"1s\"");
    let engine = setup.engine().await;
    let mut worker_a = setup.spawn_env("worker", "worker-a", &[("WORKER_MARK", "a")]);
    let ids = start_executions(&engine, &pipeline("long", "3"), 1).await;
    let job = wait_running(&setup, &engine, &ids).await.remove(0);

    worker_a.signal(SIGTERM);
    let status = expect_exit(&mut worker_a, Duration::from_secs(15), "the worker past its shutdown timeout").await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{}", setup.log_tail("worker-a", 20));

    // Back in its queue, unleased, and the interrupted attempt not counted.
    let mut conn = setup.raw();
    assert_eq!(job_status(&mut conn, &job).as_deref(), Some("pending"));
    let attempts: u32 = conn.hget(job_key(&job), "attempts").expect("HGET attempts");
    assert_eq!(attempts, 0, "the released attempt was counted");
    assert_eq!(leased_count(&mut conn), 0, "the lease was not given back");
    assert_eq!(ready_ids(&mut conn, "default"), vec![job.clone()]);

    let mut worker_b = setup.spawn_env("worker", "worker-b", &[("WORKER_MARK", "b")]);
    wait_all_terminal(&engine, &ids, Duration::from_secs(20)).await;
    let e = &executions(&engine, &ids).await[0];
    assert_eq!(e.status, ExecutionStatus::Completed, "{:?}", e.failure);
    assert_eq!(e.steps[0].output, Some(serde_json::json!({ "by": "b" })));
    assert_eq!(e.steps[0].attempts, 1);
    assert_eq!(job_status(&mut conn, &job).as_deref(), Some("completed"));
    worker_b.terminate(Duration::from_secs(10));
}
