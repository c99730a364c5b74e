//! Step kinds on the real binary: a `sleep` survives every sluice process being killed
//! during it, and approvals over the API follow quorum, the approvers policy, reject and
//! request changes (with the feedback visible to the step that runs again).

mod common;

use std::time::Duration;

use common::{Setup, count_per_step, events, start_executions, wait_all_terminal, wait_for_api};
use serde_json::{Value, json};
use sluice_core::{ExecutionStatus, FailureKind};
use sluice_testkit::free_port;
use sluice_testkit::process::SIGKILL;

/// Lines in a counter file.
fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_survives_every_process_being_killed_and_completes_once() {
    let setup = Setup::new("concurrency = 2");
    let (before, after) = (setup.dir.path().join("before"), setup.dir.path().join("after"));
    let toml = format!(
        r#"
id = "soak"
[[steps]]
name = "before"
kind = "command"
run = ["sh", "-c", "echo x >> {}"]
[[steps]]
name = "soak"
kind = "sleep"
for = "3s"
[[steps]]
name = "after"
kind = "command"
run = ["sh", "-c", "echo x >> {}"]
"#,
        before.display(),
        after.display()
    );
    let engine = setup.engine().await;
    let mut worker = setup.spawn("worker", "worker");
    let mut scheduler = setup.spawn("scheduler", "scheduler");
    let ids = start_executions(&engine, &toml, 1).await;
    let id = &ids[0];
    sluice_testkit::wait_until(Duration::from_secs(20), "the sleep to start", || async {
        let e = engine.store().get_execution(id).await.unwrap().unwrap();
        (e.current == 1).then_some(())
    })
    .await;
    // Every sluice process dies during the sleep; nothing of it lives in a process.
    worker.signal(SIGKILL);
    scheduler.signal(SIGKILL);
    let _ = worker.wait();
    let _ = scheduler.wait();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _worker = setup.spawn("worker", "worker");
    let _scheduler = setup.spawn("scheduler", "scheduler");
    wait_all_terminal(&engine, &ids, Duration::from_secs(30)).await;

    let done = engine.store().get_execution(id).await.unwrap().unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:#?}");
    assert!(done.steps[1].finished_at.unwrap() >= done.steps[1].wake_at.unwrap(), "not before its wake time");
    assert_eq!((lines(&before), lines(&after)), (1, 1), "the steps around it ran once each");
    let completed = count_per_step(&events(&mut setup.raw()), "execution.step.completed");
    assert_eq!(completed.get(&(id.clone(), 1)), Some(&1), "the sleep completed once: {completed:?}");
}

const SECRETS: [(&str, &str, &str); 4] = [
    ("alice", "user", "alice-secret-for-approvals-0123456"),
    ("bob", "user", "bob-secret-for-approvals-01234567"),
    ("release-manager", "user", "rm-secret-for-approvals-012345678"),
    ("root", "admin", "root-secret-for-approvals-01234567"),
];

/// `sluice up` with a token per subject of [`SECRETS`].
struct Api {
    setup: Setup,
    url: String,
    http: reqwest::Client,
    _up: sluice_testkit::process::Child,
}

impl Api {
    async fn start() -> Api {
        let setup = Setup::new("concurrency = 2");
        let port = free_port();
        let mut extra = format!("[api]\nlisten = \"127.0.0.1:{port}\"\n");
        for (subject, role, secret) in SECRETS {
            extra.push_str(&format!("\n[[auth.tokens]]\nsubject = \"{subject}\"\nrole = \"{role}\"\ntoken = \"{secret}\"\n"));
        }
        setup.append(&extra);
        let up = setup.spawn("up", "up");
        let url = format!("http://127.0.0.1:{port}");
        wait_for_api(&url).await;
        Api { setup, url, http: common::http_client(), _up: up }
    }

    async fn call(&self, who: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let secret = SECRETS.iter().find(|(s, _, _)| *s == who).map(|(_, _, t)| *t).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(secret);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(who, reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call("root", reqwest::Method::GET, path, None).await.1
    }

    /// Applies `pipeline` (JSON file form) and starts it; the execution id.
    async fn run(&self, pipeline: Value) -> String {
        let id = pipeline["id"].as_str().unwrap().to_string();
        let (status, body) = self.call("root", reqwest::Method::PUT, &format!("/v1/pipelines/{id}"), Some(pipeline)).await;
        assert!(status < 300, "{status} {body}");
        let (status, body) = self.post("alice", "/v1/executions", json!({ "pipeline": id, "input": {} })).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Waits until execution `id` satisfies `f`.
    async fn wait(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        sluice_testkit::wait_until(Duration::from_secs(30), what, || async {
            let e = self.get(&format!("/v1/executions/{id}")).await;
            f(&e).then_some(e)
        })
        .await
    }
}

fn blocked(e: &Value) -> bool {
    e["status"] == "blocked"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_need_distinct_approvers_from_the_policy_and_reject_fails_the_run() {
    let api = Api::start().await;
    let pipeline = json!({
        "id": "release",
        "steps": [
            {"name": "build", "kind": "noop", "output": {"sha": "abc"}},
            {"name": "approve", "kind": "approval", "required_approvals": 2,
             "approvers": ["alice", "bob", "role:admin"]},
            {"name": "deploy", "kind": "noop"},
        ],
    });
    let id = api.run(pipeline.clone()).await;
    api.wait(&id, "the approval to be asked", blocked).await;
    let approve = format!("/v1/executions/{id}/steps/approve/approve");

    let (status, body) = api.post("release-manager", &approve, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("NOT_AN_APPROVER")), "{body}");
    let (status, body) = api.post("alice", &approve, json!({"comment": "looks good"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.post("alice", &approve, json!({})).await;
    assert_eq!(status, 200, "a repeat answers the execution: {body}");
    assert_eq!(body["status"], "blocked", "the same subject twice counts once");
    assert_eq!(body["steps"][1]["approval"]["approvals"].as_array().unwrap().len(), 1);
    let (status, body) = api.post("root", &approve, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = api.wait(&id, "the execution to complete", |e| e["status"] == "completed").await;
    assert_eq!(done["steps"][1]["output"]["approved_by"], json!(["alice", "root"]));
    let (status, body) = api.post("bob", &approve, json!({})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("NOT_AWAITING_APPROVAL")), "{body}");
    let audit: Vec<&str> = done["audit"].as_array().unwrap().iter().map(|a| a["actor"].as_str().unwrap()).collect();
    assert_eq!(audit, ["alice", "root"]);

    let id = api.run(pipeline).await;
    api.wait(&id, "the second approval to be asked", blocked).await;
    let (status, body) = api.post("bob", &format!("/v1/executions/{id}/steps/1/reject"), json!({})).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("VALIDATION_FAILED")), "reject needs a reason: {body}");
    let (status, body) =
        api.post("bob", &format!("/v1/executions/{id}/steps/1/reject"), json!({"reason": "canary is red"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["failure"]["kind"], json!(FailureKind::Rejected));
    assert!(body["failure"]["message"].as_str().unwrap().contains("canary is red"));
    let (status, body) = api.post("bob", &format!("/v1/executions/{id}/steps/nope/approve"), json!({})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("STEP_NOT_FOUND")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_changes_reruns_the_step_with_the_feedback_in_its_context() {
    let api = Api::start().await;
    let seen = api.setup.dir.path().join("contexts");
    let pipeline = json!({
        "id": "draft",
        "steps": [
            {"name": "write", "kind": "command", "requires_approval": true,
             "run": ["sh", "-c", format!(
                 "cat \"$SLUICE_CONTEXT\" >> {f}; echo >> {f}; printf '{{\"drafts\":%s}}' $(grep -c . {f}) > \"$SLUICE_OUTPUT\"",
                 f = seen.display()
             )]},
            {"name": "publish", "kind": "noop"},
        ],
    });
    let id = api.run(pipeline).await;
    api.wait(&id, "the first draft to wait for approval", blocked).await;
    let (status, body) = api
        .post("bob", &format!("/v1/executions/{id}/steps/write/request-changes"), json!({"feedback": "shorter please"}))
        .await;
    assert_eq!(status, 200, "{body}");
    api.wait(&id, "the second draft to wait for approval", |e| {
        blocked(e) && e["steps"][0]["approval"]["status"] == "pending" && e["output_history"].as_array().is_some_and(|h| !h.is_empty())
    })
    .await;
    let contexts: Vec<Value> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(contexts.len(), 2, "the step ran twice");
    assert!(contexts[0].get("feedback").is_none());
    assert_eq!(contexts[1]["feedback"]["text"], "shorter please");
    assert_eq!(contexts[1]["feedback"]["by"], "bob");
    let (status, _) = api.post("alice", &format!("/v1/executions/{id}/steps/write/approve"), json!({})).await;
    assert_eq!(status, 200);
    let done = api.wait(&id, "the execution to complete", |e| e["status"] == "completed").await;
    assert_eq!(done["steps"][0]["output"], json!({"drafts": 2}), "the approved output is the second draft");
    assert_eq!(done["output_history"][0]["output"], json!({"drafts": 1}), "the first draft is kept");
}
