//! Crash safety of the real binary: two `sluice worker` processes run 200 executions of a
//! three-step pipeline while one of them is SIGKILLed every second and restarted. Nothing
//! may be lost and nothing applied twice.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Setup, count_per_step, events, executions, leased_count, ready_ids, start_executions};
use sluice_core::ExecutionStatus;

const EXECUTIONS: usize = 200;
const STEPS: u64 = 3;

/// Each step sleeps up to 0.4 s so kills land on running commands, and writes an output the
/// next step reads back through its placeholder.
const PIPELINE: &str = r#"
id = "crash"
[[steps]]
name = "one"
kind = "command"
run = ["sh", "-c", "sleep 0.$(( $$ % 5 )); printf '{\"v\":1}' > \"$SLUICE_OUTPUT\""]
retry = { max_attempts = 25, backoff = "fixed", initial = "100ms" }

[[steps]]
name = "two"
kind = "command"
run = ["sh", "-c", "sleep 0.$(( $$ % 5 )); printf '{\"v\":%s}' $(( $1 + 1 )) > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.one.output.v }}"]
retry = { max_attempts = 25, backoff = "fixed", initial = "100ms" }

[[steps]]
name = "three"
kind = "command"
run = ["sh", "-c", "sleep 0.$(( $$ % 5 )); [ \"$1\" = 2 ] && printf '{\"v\":3}' > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.two.output.v }}"]
retry = { max_attempts = 25, backoff = "fixed", initial = "100ms" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sigkilled_every_second_lose_and_duplicate_nothing() {
    let setup = Setup::new(
        "concurrency = 8\nlease_ttl = \"2s\"\nshutdown_timeout = \"2s\"\nidle_poll = \"1s\"\nkill_grace = \"1s\"",
    );
    let engine = setup.engine().await;
    let _scheduler = setup.spawn("scheduler", "scheduler");
    let mut workers = [setup.spawn("worker", "worker-0"), setup.spawn("worker", "worker-1")];

    let ids = start_executions(&engine, PIPELINE, EXECUTIONS).await;

    // Kill one worker every second, alternating, and restart it at once.
    let began = Instant::now();
    let mut kills = 0;
    let mut victim = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let all = executions(&engine, &ids).await;
        if all.iter().all(|e| !e.status.is_live()) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(240),
            "executions still live after 240 s ({} done); worker-0 log:\n{}",
            all.iter().filter(|e| !e.status.is_live()).count(),
            setup.log_tail("worker-0", 30)
        );
        workers[victim].kill();
        kills += 1;
        workers[victim] = setup.spawn("worker", &format!("worker-{victim}"));
        victim = 1 - victim;
    }
    assert!(kills >= 3, "the run ended before the chaos started ({kills} kills); make the steps slower");

    // Every execution completed, with each step's output the chained value.
    let all = executions(&engine, &ids).await;
    let not_completed: Vec<_> = all
        .iter()
        .filter(|e| e.status != ExecutionStatus::Completed)
        .map(|e| (e.id.clone(), e.status, e.failure.clone()))
        .collect();
    assert!(not_completed.is_empty(), "{} executions did not complete: {not_completed:?}", not_completed.len());
    for e in &all {
        assert_eq!(e.steps[2].output, Some(serde_json::json!({ "v": 3 })), "{}", e.id);
    }

    // Exactly one step-completed event per step, and the kills really cost attempts.
    let mut conn = setup.raw();
    let stream = events(&mut conn);
    let completed = count_per_step(&stream, "execution.step.completed");
    let expected: HashSet<(String, u64)> =
        ids.iter().flat_map(|id| (0..STEPS).map(move |s| (id.clone(), s))).collect();
    assert_eq!(completed.keys().cloned().collect::<HashSet<_>>(), expected, "a step without a completion event");
    let twice: Vec<_> = completed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "steps completed more than once: {twice:?}");
    let executions_completed = stream.iter().filter(|e| e.kind == "execution.completed").count();
    assert_eq!(executions_completed, EXECUTIONS, "one execution.completed per execution");
    let reclaimed = stream
        .iter()
        .filter(|e| e.kind == "job.failed" && e.data.to_string().contains("lease expired"))
        .count();
    assert!(reclaimed > 0, "no running job was ever killed; the test proved nothing ({kills} kills)");

    // Nothing is left leased, reserved or queued.
    assert_eq!(leased_count(&mut conn), 0, "jobs left leased");
    assert_eq!(ready_ids(&mut conn, "default"), Vec::<String>::new(), "jobs left in the ready queue");
    eprintln!(
        "crash test: {EXECUTIONS} executions completed in {:.1} s with {kills} SIGKILLs; {reclaimed} killed attempts reclaimed",
        began.elapsed().as_secs_f64()
    );
    for mut w in workers {
        w.kill();
    }
}
