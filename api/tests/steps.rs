//! `http` and `external` steps end to end: pipelines applied over the API, run by a real
//! worker beside it against a local HTTP service (retried on 503, failed for good on 400,
//! deferred on 202 until the result is posted back), and by an external worker leasing over
//! the API. A result posted three times with one key is applied once; a stale token
//! changes nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use common::{Api, Reply, api, run, settled, worker};
use serde_json::{Value, json};
use sluice_testkit::wait_until;

/// What the local service saw of the deferred call: the job id and lease token it was given.
#[derive(Default)]
struct Service {
    flaky_calls: u32,
    deferred: Option<(String, String)>,
}

/// Starts the local service; its base URL. `/flaky` answers 503 once, then 200; `/bad` 400;
/// `/async` 202 (keeping the job id and token it was sent).
async fn service() -> (String, Arc<Mutex<Service>>) {
    let state = Arc::new(Mutex::new(Service::default()));
    let app = axum::Router::new()
        .route(
            "/{what}",
            post(|State(s): State<Arc<Mutex<Service>>>, Path(what): Path<String>, headers: HeaderMap| async move {
                let mut s = s.lock().unwrap();
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                match what.as_str() {
                    "flaky" => {
                        s.flaky_calls += 1;
                        if s.flaky_calls == 1 {
                            (StatusCode::SERVICE_UNAVAILABLE, "try again".to_string())
                        } else {
                            (StatusCode::OK, json!({"deployed": true, "calls": s.flaky_calls}).to_string())
                        }
                    }
                    "async" => {
                        s.deferred = Some((header("sluice-job-id"), header("sluice-lease-token")));
                        (StatusCode::ACCEPTED, String::new())
                    }
                    _ => (StatusCode::BAD_REQUEST, "no such environment".to_string()),
                }
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// `execution.step.completed` events of execution `id`.
async fn steps_completed(api: &Api, id: &str) -> usize {
    let events = api.call(Method::GET, &format!("/v1/executions/{id}/events"), None).await.body;
    events["items"].as_array().unwrap().iter().filter(|e| e["type"] == "execution.step.completed").count()
}

fn http_step(url: String) -> Value {
    json!({"name": "deploy", "kind": "http", "url": url, "timeout": "5s",
           "retry": {"max_attempts": 3, "backoff": "fixed", "initial": "100ms"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_step_is_retried_on_503_and_failed_for_good_on_400() {
    let api = api().await;
    let (url, service) = service().await;
    let _worker = worker(&api);
    let flaky = run(&api, json!({"id": "flaky", "steps": [http_step(format!("{url}/flaky"))]})).await;
    let done = settled(&api, &flaky).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["steps"][0]["output"], json!({"deployed": true, "calls": 2}));
    assert_eq!(done["steps"][0]["attempts"], 2);
    assert_eq!(service.lock().unwrap().flaky_calls, 2);

    let bad = run(&api, json!({"id": "bad", "steps": [http_step(format!("{url}/bad"))]})).await;
    let failed = settled(&api, &bad).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["steps"][0]["attempts"], 1, "a 4xx is not retried");
    assert!(failed["failure"]["message"].as_str().unwrap().contains("400"), "{failed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_waits_for_its_result_which_is_applied_once_and_not_from_a_stale_token() {
    let api = api().await;
    let (url, service) = service().await;
    let _worker = worker(&api);
    let pipeline = json!({"id": "deferred", "steps": [http_step(format!("{url}/async")), {"name": "after", "kind": "noop"}]});
    let id = run(&api, pipeline).await;
    let (job, token) = wait_until(Duration::from_secs(20), "the service to be called", || async {
        service.lock().unwrap().deferred.clone()
    })
    .await;
    let waiting = wait_until(Duration::from_secs(20), "the step to wait for its result", || async {
        let e = api.call(Method::GET, &format!("/v1/executions/{id}"), None).await.body;
        (e["steps"][0]["status"] == "waiting").then_some(e)
    })
    .await;
    assert_eq!(waiting["status"], "running");
    assert_eq!(waiting["steps"][0]["job_id"], json!(job));

    // A token that does not hold the lease changes nothing.
    let stale = api
        .post_result(&job, Some("stale-1"), json!({"token": "not-the-token", "outcome": "completed", "output": {"v": 0}}))
        .await;
    assert_eq!((stale.status, stale.body["code"].as_str()), (StatusCode::CONFLICT, Some("LEASE_LOST")), "{stale:?}");
    assert_eq!(steps_completed(&api, &id).await, 0);

    let result = json!({"token": token, "outcome": "completed", "output": {"deployed": "v2"}});
    let answers: Vec<Reply> = [
        api.post_result(&job, Some("deploy-1"), result.clone()).await,
        api.post_result(&job, Some("deploy-1"), result.clone()).await,
        api.post_result(&job, Some("deploy-1"), result).await,
    ]
    .into();
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert_eq!(a.body, answers[0].body, "every repeat answers the first answer");
    }
    let done = settled(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["steps"][0]["output"], json!({"deployed": "v2"}));
    assert_eq!(steps_completed(&api, &id).await, 2, "one per step: the result was applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_step_is_leased_with_its_context_and_completed_over_the_api() {
    let api = api().await;
    let _worker = worker(&api);
    let pipeline = json!({"id": "label", "steps": [
        {"name": "build", "kind": "noop", "output": {"sha": "abc"}},
        {"name": "label", "kind": "external", "queue": "labels", "params": {"style": "short"}},
    ]});
    let id = run(&api, pipeline).await;
    let job = wait_until(Duration::from_secs(20), "the external step's job", || async {
        let r = api.call(Method::POST, "/v1/queues/labels/lease", Some(json!({"worker": "py-1"}))).await;
        r.body["jobs"].as_array().and_then(|j| j.first().cloned())
    })
    .await;
    assert_eq!(job["kind"], "external");
    assert_eq!(job["payload"]["params"], json!({"style": "short"}));
    assert_eq!(job["payload"]["context"]["steps"]["build"]["output"], json!({"sha": "abc"}));
    let posted = api
        .post_result(
            job["id"].as_str().unwrap(),
            Some("label-1"),
            json!({"token": job["token"], "outcome": "completed", "output": {"label": "abc-short"}}),
        )
        .await;
    assert_eq!(posted.status, StatusCode::OK, "{posted:?}");
    let done = settled(&api, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["steps"][1]["output"], json!({"label": "abc-short"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_execution_ends_the_job_whose_result_it_awaits() {
    let api = api().await;
    let (url, service) = service().await;
    let _worker = worker(&api);
    let id = run(&api, json!({"id": "deferred-cancel", "steps": [http_step(format!("{url}/async"))]})).await;
    let (job, token) = wait_until(Duration::from_secs(20), "the service to be called", || async {
        service.lock().unwrap().deferred.clone()
    })
    .await;
    wait_until(Duration::from_secs(20), "the step to wait for its result", || async {
        let e = api.call(Method::GET, &format!("/v1/executions/{id}"), None).await.body;
        (e["steps"][0]["status"] == "waiting").then_some(())
    })
    .await;
    let cancelled = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), Some(json!({}))).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{cancelled:?}");
    // No process held the job: it ends with the execution instead of waiting for its deadline.
    let ended = api.call(Method::GET, &format!("/v1/jobs/{job}"), None).await;
    assert_eq!(ended.body["status"], "failed", "{ended:?}");
    assert!(ended.body["last_error"]["message"].as_str().unwrap().contains("while the result was awaited"));
    let late = api
        .post_result(&job, Some("late-1"), json!({"token": token, "outcome": "completed", "output": {}}))
        .await;
    assert_eq!((late.status, late.body["code"].as_str()), (StatusCode::CONFLICT, Some("LEASE_LOST")), "{late:?}");
}
