//! Signals of the real binary: SIGHUP makes `sluice up` apply a changed pipeline file and
//! its new log filter without stopping; SIGTERM then lets the running job finish and
//! exits 0 with no lease left behind.

mod common;

use std::time::Duration;

use common::{Setup, expect_exit, http_client, leased_count, wait_for_api};
use serde_json::{Value, json};
use sluice_testkit::process::{SIGHUP, SIGTERM};
use sluice_testkit::{free_port, wait_until};

fn pipeline(step_output: u32) -> String {
    format!(
        "id = \"greet\"\n[[steps]]\nname = \"hello\"\nkind = \"noop\"\noutput = {{ n = {step_output} }}\n[[steps]]\nname = \"work\"\nkind = \"command\"\nrun = [\"sleep\", \"1\"]\n"
    )
}

async fn get(url: &str) -> Value {
    http_client().get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_changed_pipeline_files_and_sigterm_exits_0_with_nothing_leased() {
    let setup = Setup::new("concurrency = 2");
    let dir = setup.dir.path().join("pipelines");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("greet.toml"), pipeline(1)).unwrap();
    let port = free_port();
    setup.append(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n\n[pipelines]\ndir = \"{}\"\n",
        dir.display()
    ));
    let mut up = setup.spawn("up", "up");
    let url = format!("http://127.0.0.1:{port}");
    wait_for_api(&url).await;
    let first = get(&format!("{url}/v1/pipelines/greet")).await;
    assert_eq!(first["version"], 1, "{first}");

    // The file changes, and so does the log filter: from `info` to `warn`.
    std::fs::write(dir.join("greet.toml"), pipeline(2)).unwrap();
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, config.replace("filter = \"info\"", "filter = \"warn\"")).unwrap();
    let loaded = || setup.log_tail("up", 200).matches("pipeline loaded").count();
    assert_eq!(loaded(), 1, "{}", setup.log_tail("up", 40));
    up.signal(SIGHUP);
    let second = wait_until(Duration::from_secs(15), "the changed file to be applied", || async {
        let p = get(&format!("{url}/v1/pipelines/greet")).await;
        (p["version"] == 2).then_some(p)
    })
    .await;
    assert_eq!(second["pipeline"]["steps"][0]["output"], json!({"n": 2}), "{second}");
    // Applied under the new filter: its info lines are not written any more.
    assert_eq!(loaded(), 1, "{}", setup.log_tail("up", 40));

    // Still serving after the reload: run it, and stop while its command step runs.
    let started = http_client()
        .post(format!("{url}/v1/executions"))
        .json(&json!({"pipeline": "greet", "input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 201);
    let exec: Value = started.json().await.unwrap();
    let id = exec["id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(15), "the command step to run", || async {
        let e = get(&format!("{url}/v1/executions/{id}")).await;
        (e["steps"][1]["status"] == "running").then_some(())
    })
    .await;
    up.signal(SIGTERM);
    let status = expect_exit(&mut up, Duration::from_secs(20), "sluice up").await;
    assert_eq!(status.code(), Some(0), "{}", setup.log_tail("up", 20));
    assert_eq!(leased_count(&mut setup.raw()), 0, "no lease left behind");
    let engine = setup.engine().await;
    let done = engine.store().get_execution(&id).await.unwrap().unwrap();
    assert_eq!(done.status, sluice_core::ExecutionStatus::Completed, "the running job finished during the drain");
}
