//! External workers over HTTP, against a real Redis (testkit): lease (with long-poll, ended
//! at once by a server shutdown), heartbeat (which tells of a cancelled execution) and
//! result, applied exactly once; the two lanes of a queue (sluice's workers never get a job
//! of a custom kind, the API never hands out a `command` job); the `worker` role.
//!
//! Step jobs of kind `external` are made here by starting an execution of a pipeline built
//! in code (through the store), then driven over HTTP like any other; `steps.rs` applies
//! such a pipeline over the API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Api, Reply, api};
use serde_json::{Value, json};
use sluice_api::auth::{Secret, Token};
use sluice_api::{AppState, Auth, Role, router};
use sluice_core::execution::StartRequest;
use sluice_core::pipeline::{Pipeline, StepDef, StepKind};
use sluice_core::{RetryPolicy, ids};
use sluice_store::StartOutcome;
use sluice_store::engine::Engine;
use sluice_testkit::wait_until;
use tower::ServiceExt;

async fn post(api: &Api, uri: &str, body: Value) -> Reply {
    api.call(Method::POST, uri, Some(body)).await
}

/// Enqueues a standalone job over HTTP; returns its id.
async fn enqueue(api: &Api, queue: &str, kind: &str, payload: Value) -> String {
    let r = post(
        api,
        "/v1/jobs",
        json!({"queue": queue, "kind": kind, "payload": payload}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    r.body["job"]["id"].as_str().unwrap().to_string()
}

/// Leases from `queue` as `worker`; returns the leased jobs.
async fn lease(api: &Api, queue: &str, body: Value) -> Vec<Value> {
    let r = post(api, &format!("/v1/queues/{queue}/lease"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["jobs"].as_array().unwrap().clone()
}

/// The events of shard 0 about job `id`, by type.
async fn job_events(engine: &Engine, id: &str, kind: &str) -> usize {
    let events = engine.store().stream_range(0, "-", "+").await.unwrap();
    events
        .iter()
        .filter(|e| e.kind == kind && e.data["job_id"] == id)
        .count()
}

fn step(name: &str, kind: StepKind) -> StepDef {
    StepDef {
        name: name.into(),
        queue: "media".into(),
        timeout_ms: None,
        retry: RetryPolicy::default(),
        requires_approval: false,
        kind,
    }
}

/// Starts an execution of a pipeline built in code (see the module docs); returns its id.
async fn start_execution(engine: &Engine, steps: Vec<StepDef>, input: Value) -> String {
    let pipeline = Pipeline {
        id: "thumbs".into(),
        name: "Thumbs".into(),
        description: None,
        steps,
    };
    let req = StartRequest {
        pipeline,
        pipeline_version: 1,
        input,
        target: None,
        idempotency_key: None,
    };
    match engine
        .store()
        .start_execution(req, engine.now())
        .await
        .unwrap()
    {
        StartOutcome::Started(e) => e.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_long_poll_returns_a_job_enqueued_while_it_waits() {
    let api = Arc::new(api().await);
    let started = Instant::now();
    let waiting = {
        let api = api.clone();
        tokio::spawn(
            async move { lease(&api, "media", json!({"worker": "w", "wait_ms": 20000})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the lease waits while the queue is empty"
    );
    let id = enqueue(&api, "media", "resize-image", json!({"w": 64})).await;
    let jobs = waiting.await.unwrap();
    // Woken by the queue's notification, long before the wait or the slow recheck ends.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0]["id"].as_str(), jobs[0]["attempt"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    assert_eq!(jobs[0]["payload"], json!({"w": 64}));

    // A wait with nothing to find ends empty when its time is up.
    let started = Instant::now();
    assert!(
        lease(&api, "media", json!({"worker": "w", "wait_ms": 400}))
            .await
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_external_step_completes_through_lease_heartbeat_and_result_and_its_execution_advances()
{
    let api = api().await;
    let steps = vec![
        step(
            "resize",
            StepKind::External {
                params: Some(json!({"width": 64})),
            },
        ),
        step("publish", StepKind::External { params: None }),
    ];
    let exec_id = start_execution(&api.engine, steps, json!({"image": "cat.png"})).await;

    let jobs = lease(
        &api,
        "media",
        json!({"worker": "thumbs-1", "max": 10, "lease_ttl_ms": 60000}),
    )
    .await;
    assert_eq!(jobs.len(), 1, "only the current step's job is queued");
    let job = &jobs[0];
    let (id, token) = (job["id"].as_str().unwrap(), job["token"].as_str().unwrap());
    assert_eq!(
        (
            job["kind"].as_str(),
            job["execution_id"].as_str(),
            job["step"].as_u64()
        ),
        (Some("external"), Some(exec_id.as_str()), Some(0))
    );
    assert_eq!(job["payload"]["params"], json!({"width": 64}));
    assert_eq!(
        job["payload"]["context"]["input"],
        json!({"image": "cat.png"})
    );
    assert_eq!(job["payload"]["context"]["execution"]["step"], "resize");
    let exec = api
        .call(Method::GET, &format!("/v1/executions/{exec_id}"), None)
        .await;
    assert_eq!(exec.body["steps"][0]["status"], "running");

    let beat = post(
        &api,
        &format!("/v1/jobs/{id}/heartbeat"),
        json!({"token": token, "extend_ms": 120000}),
    )
    .await;
    assert_eq!(beat.status, StatusCode::OK, "{beat:?}");
    assert_eq!(beat.body["cancel_requested"], false);
    let deadline = beat.body["lease_deadline"].as_i64().unwrap();
    assert!(
        deadline >= job["lease_deadline"].as_i64().unwrap() + 50_000,
        "the lease was extended"
    );

    let done = json!({"token": token, "outcome": "completed", "output": {"thumb": "cat-64.png"}});
    let r = api.post_result(id, Some(&format!("{id}-1")), done).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body,
        json!({"job_id": id, "attempt": 1, "outcome": "completed", "job_status": "completed"})
    );
    let exec = api
        .call(Method::GET, &format!("/v1/executions/{exec_id}"), None)
        .await;
    assert_eq!(
        (exec.body["current"].as_u64(), exec.body["status"].as_str()),
        (Some(1), Some("running"))
    );
    assert_eq!(
        exec.body["steps"][0]["output"],
        json!({"thumb": "cat-64.png"})
    );

    // The next step sees the output in its context; completing it completes the execution.
    let jobs = lease(&api, "media", json!({"worker": "thumbs-1"})).await;
    assert_eq!(
        jobs[0]["payload"]["context"]["steps"]["resize"]["output"],
        json!({"thumb": "cat-64.png"})
    );
    let last = jobs[0]["id"].as_str().unwrap();
    let done = json!({"token": jobs[0]["token"], "outcome": "completed"});
    assert_eq!(
        api.post_result(last, Some("publish-1"), done).await.status,
        StatusCode::OK
    );
    let exec = api
        .call(Method::GET, &format!("/v1/executions/{exec_id}"), None)
        .await;
    assert_eq!(exec.body["status"], "completed");
}

#[tokio::test]
async fn a_result_posted_three_times_with_one_key_is_applied_once_and_another_key_is_refused() {
    let api = api().await;
    let id = enqueue(&api, "media", "resize-image", json!(null)).await;
    let jobs = lease(&api, "media", json!({"worker": "w"})).await;
    let token = jobs[0]["token"].as_str().unwrap();
    let done = json!({"token": token, "outcome": "completed", "output": {"n": 1}});

    let first = api.post_result(&id, Some("k-1"), done.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..2 {
        let again = api.post_result(&id, Some("k-1"), done.clone()).await;
        assert_eq!((again.status, &again.body), (StatusCode::OK, &first.body));
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    assert_eq!(job_events(&api.engine, &id, "job.completed").await, 1);

    let other = api.post_result(&id, Some("k-2"), done).await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("RESULT_ALREADY_APPLIED"))
    );
    assert_eq!(other.body["job_id"], id.as_str());
    assert_eq!(job_events(&api.engine, &id, "job.completed").await, 1);
    let job = api.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(
        (job.body["status"].as_str(), &job.body["result"]),
        (Some("completed"), &json!({"n": 1}))
    );

    // The request's own problems.
    let r = api
        .post_result(&id, None, json!({"outcome": "completed"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{r:?}"
    );
    let r = api
        .post_result(
            &ids::new_id(ids::JOB, 0),
            Some("k"),
            json!({"outcome": "completed"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("JOB_NOT_FOUND"))
    );
    let r = api
        .post_result(
            &id,
            Some("k"),
            json!({"outcome": "completed", "error": "e", "colour": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("VALIDATION_FAILED"))
    );
    let fields: Vec<&str> = r.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["colour", "error"]);
}

#[tokio::test]
async fn a_stale_token_is_lease_lost_after_the_lease_expired_and_another_worker_took_the_job() {
    let api = api().await;
    let id = enqueue(&api, "media", "resize-image", json!(null)).await;
    let jobs = lease(
        &api,
        "media",
        json!({"worker": "slow", "lease_ttl_ms": 1000}),
    )
    .await;
    let stale = jobs[0]["token"].as_str().unwrap().to_string();

    // The lease expires; the scheduler's reclaim fails the attempt and the job is retried.
    let reclaimed = wait_until(
        Duration::from_secs(10),
        "the lease to be reclaimed",
        || async {
            let (_, failed) = api.engine.reclaim(0, 10).await.unwrap();
            (failed == 1).then_some(())
        },
    );
    reclaimed.await;
    let jobs = lease(&api, "media", json!({"worker": "fast", "wait_ms": 10000})).await;
    assert_eq!(
        (jobs[0]["id"].as_str(), jobs[0]["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let fresh = jobs[0]["token"].as_str().unwrap();

    let beat = post(
        &api,
        &format!("/v1/jobs/{id}/heartbeat"),
        json!({"token": stale}),
    )
    .await;
    assert_eq!(
        (beat.status, beat.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("LEASE_LOST"))
    );
    assert!(
        beat.body["detail"]
            .as_str()
            .unwrap()
            .contains("under another lease"),
        "{beat:?}"
    );
    let late = api
        .post_result(
            &id,
            Some("slow-1"),
            json!({"token": stale, "outcome": "completed", "output": "slow"}),
        )
        .await;
    assert_eq!(
        (late.status, late.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("LEASE_LOST"))
    );
    let job = api.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(
        (
            job.body["status"].as_str(),
            job.body["lease"]["worker"].as_str()
        ),
        (Some("running"), Some("fast"))
    );

    let r = api
        .post_result(
            &id,
            Some("fast-2"),
            json!({"token": fresh, "outcome": "completed", "output": "fast"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let job = api.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job.body["result"], "fast");
    assert_eq!(job_events(&api.engine, &id, "job.completed").await, 1);
}

#[tokio::test]
async fn sluice_workers_never_lease_a_custom_kind_and_the_api_never_hands_out_a_command_job() {
    let api = api().await;
    let noop = enqueue(&api, "mixed", "noop", json!(null)).await;
    let command = enqueue(&api, "mixed", "command", json!({"run": ["true"]})).await;
    let custom = enqueue(&api, "mixed", "resize-image", json!(null)).await;

    // The API hands out the custom job only, however many are asked for.
    let jobs = lease(&api, "mixed", json!({"worker": "ext", "max": 10})).await;
    let leased: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(leased, [custom.as_str()]);
    let token = jobs[0]["token"].clone();
    assert!(
        lease(&api, "mixed", json!({"worker": "ext", "max": 10}))
            .await
            .is_empty()
    );

    // Release the custom job back to its queue (a retryable failure), then run a real
    // worker: it runs the noop and command jobs, and never the custom one.
    let failed = json!({"token": token, "outcome": "failed", "error": "try later"});
    assert_eq!(
        api.post_result(&custom, Some("c-1"), failed).await.status,
        StatusCode::OK
    );
    let config = sluice_worker::WorkerConfig {
        queues: vec!["mixed".into()],
        concurrency: 4,
        lease_ttl: Duration::from_secs(5),
        idle_poll: Duration::from_millis(100),
        ..sluice_worker::WorkerConfig::default()
    };
    let worker = sluice_worker::Worker::new(api.engine.clone(), config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let status = |id: String| {
        let api = &api;
        async move {
            api.call(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await
                .body["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    wait_until(
        Duration::from_secs(20),
        "the worker to complete its jobs",
        || async {
            (status(noop.clone()).await == "completed"
                && status(command.clone()).await == "completed")
                .then_some(())
        },
    )
    .await;
    // Its retry backoff is over by now: the custom job is due, and still the worker's
    // leases leave it alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = api
        .call(Method::GET, &format!("/v1/jobs/{custom}"), None)
        .await;
    assert_eq!(
        (job.body["status"].as_str(), job.body["attempts"].as_u64()),
        (Some("pending"), Some(1)),
        "{job:?}"
    );
    let _ = stop.send(());
    running.await.unwrap();
    let jobs = lease(&api, "mixed", json!({"worker": "ext", "wait_ms": 5000})).await;
    assert_eq!(
        (jobs[0]["id"].as_str(), jobs[0]["attempt"].as_u64()),
        (Some(custom.as_str()), Some(2))
    );
}

const WORKER: &str = "worker-token-5e6f7a8b9c0d1e2f3a";

/// The API with one token, of role `worker`.
fn with_worker_token(api: &Api) -> Router {
    let token = Token {
        subject: "wes".into(),
        role: Role::Worker,
        secret: Secret::new(WORKER),
    };
    router(AppState::new(api.engine.clone()).with_auth(Auth::tokens([token])))
}

async fn as_worker(app: &Router, uri: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {WORKER}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_worker_token_leases_heartbeats_and_posts_results_but_starts_nothing() {
    let api = api().await;
    let id = enqueue(&api, "media", "resize-image", json!(null)).await;
    let app = with_worker_token(&api);

    let (status, body) = as_worker(
        &app,
        "/v1/queues/media/lease",
        None,
        json!({"worker": "wes-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["jobs"][0]["token"].as_str().unwrap().to_string();
    let (status, body) = as_worker(
        &app,
        &format!("/v1/jobs/{id}/heartbeat"),
        None,
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = json!({"token": token, "outcome": "completed"});
    let (status, body) =
        as_worker(&app, &format!("/v1/jobs/{id}/result"), Some("wes-1"), done).await;
    assert_eq!(
        (status, body["job_status"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{body}"
    );

    for (uri, body) in [
        ("/v1/executions", json!({"pipeline": "thumbs"})),
        ("/v1/jobs", json!({"kind": "resize-image"})),
        (&*format!("/v1/jobs/{id}/cancel"), json!({})),
    ] {
        let (status, body) = as_worker(&app, uri, None, body).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
            "{uri}"
        );
        assert_eq!(body["required_role"], "user", "{uri}");
    }
}

#[tokio::test]
async fn a_heartbeat_tells_the_worker_its_execution_was_cancelled_and_its_result_changes_nothing_else()
 {
    let api = api().await;
    let steps = vec![
        step("resize", StepKind::External { params: None }),
        step("publish", StepKind::External { params: None }),
    ];
    let exec_id = start_execution(&api.engine, steps, json!({})).await;
    let jobs = lease(&api, "media", json!({"worker": "w"})).await;
    let (id, token) = (
        jobs[0]["id"].as_str().unwrap(),
        jobs[0]["token"].as_str().unwrap(),
    );
    let beat = json!({"token": token});
    let r = post(&api, &format!("/v1/jobs/{id}/heartbeat"), beat.clone()).await;
    assert_eq!(r.body["cancel_requested"], false);

    let r = post(&api, &format!("/v1/executions/{exec_id}/cancel"), json!({})).await;
    assert_eq!(r.body["status"], "cancelled", "{r:?}");
    let r = post(&api, &format!("/v1/jobs/{id}/heartbeat"), beat).await;
    assert_eq!(
        (r.status, &r.body["cancel_requested"]),
        (StatusCode::OK, &json!(true))
    );

    // The worker stops and reports; the attempt is recorded, nothing is retried or advanced.
    let failed = json!({"token": token, "outcome": "failed", "error": "stopped"});
    let r = api.post_result(id, Some("stop-1"), failed).await;
    assert_eq!(
        (r.status, r.body["job_status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{r:?}"
    );
    let exec = api
        .call(Method::GET, &format!("/v1/executions/{exec_id}"), None)
        .await;
    assert_eq!(
        (exec.body["status"].as_str(), exec.body["current"].as_u64()),
        (Some("cancelled"), Some(0))
    );
    assert!(
        lease(&api, "media", json!({"worker": "w"}))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn shutting_the_server_down_ends_a_long_poll_at_once() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(api.engine.clone());
    let server = tokio::spawn(sluice_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let body = json!({"worker": "w", "wait_ms": 30000}).to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/queues/media/lease HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    let _ = stop.send(());
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"jobs":[]}"#), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}
