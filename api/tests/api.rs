//! The HTTP API against a real Redis: each test starts its own `redis-server` (testkit) and
//! drives `router(state)` with `tower::ServiceExt::oneshot`, without a socket (one test
//! serves on a real socket to check `serve` and its graceful shutdown).
//!
//! Every error response any test sees is checked to be `application/problem+json` with a
//! `code`, a `type` derived from it and the HTTP status.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sluice_api::{AppState, BODY_LIMIT};
use sluice_core::ids;
use sluice_store::StoreConfig;

mod common;

use common::{Api, Reply, api, api_with};

impl Api {
    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn put(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::PUT, uri, Some(body)).await
    }

    /// Applies a two-step pipeline `id` (a command, then a noop).
    async fn apply_release(&self, id: &str) {
        let reply = self.put(&format!("/v1/pipelines/{id}"), release()).await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }

    /// Starts an execution of `pipeline` and returns the reply.
    async fn start(&self, body: Value) -> Reply {
        self.post("/v1/executions", body).await
    }

    /// `(type, data)` of every event of shard 0.
    async fn events(&self) -> Vec<(String, Value)> {
        let events = self.engine.store().stream_range(0, "-", "+").await.unwrap();
        events.into_iter().map(|e| (e.kind, e.data)).collect()
    }
}

fn release() -> Value {
    json!({
        "name": "Release",
        "steps": [
            {"name": "build", "kind": "command", "run": ["make", "build"], "timeout": "10m"},
            {"name": "done", "kind": "noop"},
        ]
    })
}

fn problem_fields(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["problems"]
        .as_array()
        .expect("a problems list")
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    fields
}

// ----- pipelines ------------------------------------------------------------------------

#[tokio::test]
async fn applying_a_pipeline_creates_version_1_and_only_a_change_makes_a_new_version() {
    let api = api().await;
    let first = api.put("/v1/pipelines/release", release()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.headers[header::LOCATION], "/v1/pipelines/release");
    assert_eq!(first.body["id"], "release");
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["changed"], true);
    assert_eq!(
        first.body["pipeline"]["steps"][0]["timeout_ms"], 600_000,
        "the answer carries the canonical form"
    );

    let same = api.put("/v1/pipelines/release", release()).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(
        (same.body["version"].clone(), same.body["changed"].clone()),
        (json!(1), json!(false))
    );

    let mut changed = release();
    changed["steps"][0]["timeout"] = json!("20m");
    changed["id"] = json!("release");
    let second = api.put("/v1/pipelines/release", changed).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        (
            second.body["version"].clone(),
            second.body["changed"].clone()
        ),
        (json!(2), json!(true))
    );

    let got = api.get("/v1/pipelines/release").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["version"], 2);
    assert_eq!(got.body["pipeline"]["steps"][0]["timeout_ms"], 1_200_000);
    assert!(got.body["created_at"].as_i64().unwrap() <= got.body["updated_at"].as_i64().unwrap());

    let list = api.get("/v1/pipelines").await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "release");
    assert_eq!(items[0]["name"], "Release");
    assert_eq!(items[0]["version"], 2);
    assert_eq!(items[0]["steps"], 2);
}

#[tokio::test]
async fn an_invalid_pipeline_is_refused_with_every_problem_listed() {
    let api = api().await;
    let broken = json!({
        "steps": [
            {"name": "build", "kind": "command", "run": ["make", "{{ steps.deploy.output.url }}"]},
            {"name": "build", "kind": "command", "run": ["make"], "timeout": "10x"},
            {"name": "deploy", "kind": "foo"},
            {"name": "notify", "kind": "command", "run": ["notify"], "colour": "blue"},
        ]
    });
    let reply = api.put("/v1/pipelines/broken", broken).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["code"], "PIPELINE_INVALID");
    assert_eq!(
        problem_fields(&reply.body),
        [
            "steps[0].run[1]",
            "steps[1].name",
            "steps[1].timeout",
            "steps[2].kind",
            "steps[3].colour"
        ]
    );
    let message = |field: &str| {
        reply.body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["field"] == field)
            .map(|p| p["message"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(message("steps[0].run[1]").contains("does not run before this step"));
    assert!(message("steps[1].name").contains("duplicate step name `build`"));
    assert!(message("steps[1].timeout").contains("unknown unit `x`"));
    assert!(message("steps[2].kind").starts_with("unknown kind `foo`"));
    assert!(message("steps[3].colour").starts_with("unknown field"));
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the pipeline has 5 problems")
    );
    assert_eq!(
        api.get("/v1/pipelines/broken").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_body_id_that_differs_from_the_path_is_a_pipeline_problem() {
    let api = api().await;
    let mut body = release();
    body["id"] = json!("other");
    let reply = api.put("/v1/pipelines/release", body).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["code"], "PIPELINE_INVALID");
    assert_eq!(problem_fields(&reply.body), ["id"]);

    let reply = api.put("/v1/pipelines/Not%20An%20Id", release()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem_fields(&reply.body),
        ["id"],
        "the path id is validated like a body id"
    );
}

#[tokio::test]
async fn getting_an_unknown_pipeline_is_404() {
    let api = api().await;
    let reply = api.get("/v1/pipelines/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["code"], "PIPELINE_NOT_FOUND");
    assert!(reply.body["detail"].as_str().unwrap().contains("nope"));
}

// ----- executions -----------------------------------------------------------------------

#[tokio::test]
async fn a_started_execution_queues_its_first_step_and_its_job_is_served_without_a_token() {
    let api = api().await;
    api.apply_release("release").await;
    let started = api
        .start(json!({"pipeline": "release", "input": {"sha": "abc"}}))
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let exec_id = started.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        started.headers[header::LOCATION],
        format!("/v1/executions/{exec_id}")
    );
    assert_eq!(started.body["status"], "running");

    let exec = api.get(&format!("/v1/executions/{exec_id}")).await;
    assert_eq!(exec.status, StatusCode::OK);
    assert_eq!(exec.body["pipeline_id"], "release");
    assert_eq!(exec.body["pipeline_version"], 1);
    assert_eq!(exec.body["input"], json!({"sha": "abc"}));
    assert!(
        exec.body.get("pipeline").is_none(),
        "the snapshot is left out by default"
    );
    assert_eq!(exec.body["steps"][0]["status"], "queued");
    assert_eq!(exec.body["steps"][1]["status"], "pending");
    let job_id = exec.body["steps"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    let with_pipeline = api
        .get(&format!("/v1/executions/{exec_id}?include=pipeline"))
        .await;
    assert_eq!(with_pipeline.body["pipeline"]["id"], "release");
    let bad_include = api
        .get(&format!("/v1/executions/{exec_id}?include=everything"))
        .await;
    assert_eq!(bad_include.status, StatusCode::BAD_REQUEST);

    let job = api.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["status"], "pending");
    assert_eq!(job.body["kind"], "command");
    assert_eq!(job.body["execution_id"], exec_id.as_str());
    assert!(!job.body.to_string().contains("token"));

    // Once a worker holds it, the step shows `running` and the lease shows who holds it.
    api.run_job(&job_id).await;
    let exec = api.get(&format!("/v1/executions/{exec_id}")).await;
    assert_eq!(exec.body["steps"][0]["status"], "running");
    assert_eq!(exec.body["steps"][0]["attempts"], 1);
    let job = api.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job.body["status"], "running");
    assert_eq!(job.body["lease"]["worker"], "w");
    assert!(job.body["lease"]["deadline"].is_i64());
    assert!(job.body["lease"].get("token").is_none());
    assert!(!job.body.to_string().contains("token"));
}

#[tokio::test]
async fn a_start_on_a_busy_target_is_refused_with_409_naming_the_holder() {
    let api = api().await;
    api.apply_release("release").await;
    let body = json!({"pipeline": "release", "target": "repo:acme/web"});
    let (a, b) = tokio::join!(api.start(body.clone()), api.start(body));
    let (won, lost) = if a.status == StatusCode::CREATED {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(won.status, StatusCode::CREATED);
    assert_eq!(lost.status, StatusCode::CONFLICT);
    assert_eq!(lost.body["code"], "TARGET_BUSY");
    assert_eq!(lost.body["execution_id"], won.body["id"]);
    let detail = lost.body["detail"].as_str().unwrap();
    assert!(detail.contains("repo:acme/web"), "{detail}");
    assert!(
        detail.contains(won.body["id"].as_str().unwrap()),
        "{detail}"
    );
}

#[tokio::test]
async fn two_starts_with_the_same_idempotency_key_return_the_same_execution() {
    let api = api().await;
    api.apply_release("release").await;
    let body = json!({"pipeline": "release", "idempotency_key": "deploy-42"});
    let first = api.start(body.clone()).await;
    let second = api.start(body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(second.body["idempotency_key"], "deploy-42");
}

#[tokio::test]
async fn starting_an_unknown_pipeline_is_404() {
    let api = api().await;
    let reply = api.start(json!({"pipeline": "nope"})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["code"], "PIPELINE_NOT_FOUND");
}

#[tokio::test]
async fn a_start_body_with_an_unknown_field_or_bad_values_is_422_naming_each_field() {
    let api = api().await;
    api.apply_release("release").await;
    let reply = api
        .start(json!({"pipeline": "release", "inputs": {}}))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["code"], "VALIDATION_FAILED");
    assert_eq!(problem_fields(&reply.body), ["inputs"]);
    assert!(
        reply.body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown field")
    );

    let reply = api
        .start(json!({"pipeline": "release", "input": [1], "target": "", "idempotency_key": "x".repeat(201)}))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem_fields(&reply.body),
        ["idempotency_key", "input", "target"]
    );
}

#[tokio::test]
async fn an_unknown_field_is_named_even_when_its_key_is_empty_or_not_plain() {
    // Found by schemathesis: `{"": 1}` was reported at field `""`, the name of the body
    // itself, and a key of a megabyte was echoed whole.
    let api = api().await;
    let long = "k".repeat(100_000);
    let reply = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"kind": "noop", "": 1, "a\u{10}b": 2, long.as_str(): 3})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["code"], "VALIDATION_FAILED");
    let cut = format!("{}…", "k".repeat(60));
    assert_eq!(
        problem_fields(&reply.body),
        [r#"[""]"#, r#"["a\u0010b"]"#, cut.as_str()]
    );
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.len() < 1000, "{detail}");
}

#[tokio::test]
async fn unknown_and_malformed_execution_ids_are_404() {
    let api = api().await;
    for id in [
        "nope",
        "ex_0_nope",
        &ids::new_id(ids::EXECUTION, 0),
        &ids::new_id(ids::EXECUTION, 9),
    ] {
        let reply = api.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(reply.body["code"], "EXECUTION_NOT_FOUND");
    }
}

// ----- jobs -----------------------------------------------------------------------------

#[tokio::test]
async fn cancelling_a_pending_step_job_fails_its_execution_and_is_not_repeatable() {
    let api = api().await;
    api.apply_release("release").await;
    let started = api
        .start(json!({"pipeline": "release", "target": "repo:a"}))
        .await;
    let exec_id = started.body["id"].as_str().unwrap().to_string();
    let job_id = started.body["steps"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    let cancelled = api
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body["success"], true);
    assert_eq!(cancelled.body["job"]["id"], job_id.as_str());
    assert_eq!(cancelled.body["job"]["status"], "cancelled");
    assert_eq!(
        api.get(&format!("/v1/jobs/{job_id}")).await.body["status"],
        "cancelled"
    );

    let exec = api.get(&format!("/v1/executions/{exec_id}")).await;
    assert_eq!(exec.body["status"], "failed");
    assert_eq!(exec.body["failure"]["kind"], "cancelled");
    assert_eq!(exec.body["failure"]["step"], "build");
    assert_eq!(exec.body["steps"][0]["status"], "cancelled");

    let events = api.events().await;
    let cancel_events: Vec<&Value> = events
        .iter()
        .filter(|(kind, _)| kind == "job.cancelled")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(cancel_events.len(), 1, "{events:?}");
    assert_eq!(cancel_events[0]["job_id"], job_id.as_str());
    assert_eq!(cancel_events[0]["execution_id"], exec_id.as_str());
    assert!(events.iter().any(|(kind, _)| kind == "execution.failed"));

    let again = api
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["code"], "JOB_NOT_PENDING");
    assert_eq!(again.body["job_status"], "cancelled");

    // The target is free again.
    let next = api
        .start(json!({"pipeline": "release", "target": "repo:a"}))
        .await;
    assert_eq!(next.status, StatusCode::CREATED);
}

#[tokio::test]
async fn cancel_of_an_unknown_or_malformed_job_id_is_404() {
    let api = api().await;
    for id in [
        "nope",
        "job_0_nope",
        "ex_0_01JD0000000000000000000000",
        &ids::new_id(ids::JOB, 0),
        &ids::new_id(ids::JOB, 7),
    ] {
        let reply = api.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(reply.body["code"], "JOB_NOT_FOUND");
        let reply = api.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(reply.body["code"], "JOB_NOT_FOUND");
    }
    // A cancel needs no body at all.
    let id = ids::new_id(ids::JOB, 0);
    let reply = api
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancel_of_running_job_is_refused_with_409() {
    let api = api().await;
    let created = api.post("/v1/jobs", json!({"kind": "noop"})).await;
    let job_id = created.body["job"]["id"].as_str().unwrap().to_string();
    api.run_job(&job_id).await;

    let reply = api
        .post(&format!("/v1/jobs/{job_id}/cancel"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["code"], "JOB_NOT_PENDING");
    assert_eq!(
        reply.body["detail"],
        format!("job `{job_id}` is running; only pending jobs can be cancelled")
    );
    assert_eq!(reply.body["job_status"], "running");
    assert_eq!(
        api.get(&format!("/v1/jobs/{job_id}")).await.body["status"],
        "running"
    );
    assert!(
        !api.events()
            .await
            .iter()
            .any(|(kind, _)| kind == "job.cancelled")
    );
}

#[tokio::test]
async fn enqueueing_a_job_creates_it_and_a_dedupe_key_returns_the_pending_one() {
    let api = api().await;
    let body = json!({
        "queue": "reports", "kind": "command",
        "payload": {"run": ["echo", "hi"], "env": {"LANG": "C"}},
        "priority": 10, "max_attempts": 5, "dedupe_key": "nightly", "timeout": "30s", "delay": "1h"
    });
    let created = api.post("/v1/jobs", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["deduplicated"], false);
    let job = &created.body["job"];
    let job_id = job["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.headers[header::LOCATION],
        format!("/v1/jobs/{job_id}")
    );
    assert_eq!(job["status"], "pending");
    assert_eq!(job["queue"], "reports");
    assert_eq!(job["priority"], 10);
    assert_eq!(job["retry"]["max_attempts"], 5);
    assert_eq!(job["timeout_ms"], 30_000);
    assert_eq!(job["dedupe_key"], "nightly");
    assert_eq!(job["payload"]["run"], json!(["echo", "hi"]));
    let delay = job["scheduled_at"].as_i64().unwrap() - job["created_at"].as_i64().unwrap();
    assert_eq!(delay, 3_600_000);

    let mut again = body;
    again["payload"] = json!({"run": ["echo", "other"]});
    let dup = api.post("/v1/jobs", again).await;
    assert_eq!(dup.status, StatusCode::OK);
    assert_eq!(dup.body["deduplicated"], true);
    assert_eq!(dup.body["job"]["id"], job_id.as_str());
    assert_eq!(dup.body["job"]["payload"]["run"], json!(["echo", "hi"]));

    let other = api
        .post(
            "/v1/jobs",
            json!({"kind": "acme.resize-image", "payload": [1, 2]}),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(other.body["job"]["queue"], "default");
    assert_eq!(other.body["job"]["retry"]["max_attempts"], 3);
    let enqueued = api
        .events()
        .await
        .into_iter()
        .filter(|(k, _)| k == "job.enqueued")
        .count();
    assert_eq!(enqueued, 2, "a deduplicated enqueue appends no event");
}

#[tokio::test]
async fn an_invalid_enqueue_body_is_422_naming_each_field() {
    let api = api().await;
    let reply = api
        .post(
            "/v1/jobs",
            json!({
                "queue": "no spaces", "kind": "Bad Kind", "priority": 1001, "max_attempts": 0,
                "delay": "10", "timeout": 5, "colour": "blue"
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["code"], "VALIDATION_FAILED");
    assert_eq!(
        problem_fields(&reply.body),
        [
            "colour",
            "delay",
            "kind",
            "max_attempts",
            "priority",
            "queue",
            "timeout"
        ]
    );

    let reply = api
        .post(
            "/v1/jobs",
            json!({"kind": "command", "payload": {"run": []}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_fields(&reply.body), ["payload.run"]);

    let reply = api.post("/v1/jobs", json!({"payload": {}})).await;
    assert_eq!(problem_fields(&reply.body), ["kind"]);
    assert_eq!(reply.body["problems"][0]["message"], "is required");

    let reply = api.post("/v1/jobs", json!(["kind"])).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_fields(&reply.body), [""]);
}

// ----- transport: bodies, routes, methods, probes, serving ---------------------------------

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let api = api().await;
    let big = json!({"kind": "noop", "payload": "x".repeat(BODY_LIMIT)});
    let reply = api.post("/v1/jobs", big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body["code"], "PAYLOAD_TOO_LARGE");

    let just_under = json!({"kind": "noop", "payload": "x".repeat(BODY_LIMIT - 100)});
    assert_eq!(
        api.post("/v1/jobs", just_under).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn invalid_json_is_400_naming_the_position_and_a_wrong_content_type_is_415() {
    let api = api().await;
    let request = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"kind\": \"noop\",\n  oops}"))
        .unwrap();
    let reply = api.send(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["code"], "BAD_REQUEST");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains("line 2 column 3"), "{detail}");

    let request = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"kind\": \"noop\"}"))
        .unwrap();
    let reply = api.send(request).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.body["code"], "UNSUPPORTED_MEDIA_TYPE");

    let reply = api
        .send(
            Request::put("/v1/pipelines/p")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let api = api().await;
    for uri in ["/", "/v1", "/v1/nope", "/v1/jobs/x/y/z", "/v2/jobs"] {
        let reply = api.get(uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.body["code"], "NOT_FOUND");
    }
    let reply = api.call(Method::DELETE, "/v1/jobs", None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.body["code"], "METHOD_NOT_ALLOWED");
    assert_eq!(reply.headers[header::ALLOW], "POST");
    let reply = api
        .get(&format!("/v1/jobs/{}/cancel", ids::new_id(ids::JOB, 0)))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = api.call(Method::POST, "/healthz", None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn readiness_follows_redis_while_liveness_does_not() {
    // Short Redis timeouts so that calls fail fast once the server is gone.
    let mut api = api_with(StoreConfig {
        response_timeout: std::time::Duration::from_millis(300),
        ..StoreConfig::default()
    })
    .await;
    let healthz = api.get("/healthz").await;
    assert_eq!(
        (healthz.status, healthz.body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let readyz = api.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::OK);

    api.redis.kill();
    let readyz = api.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.body["code"], "NOT_READY");
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    let reply = api
        .get(&format!("/v1/jobs/{}", ids::new_id(ids::JOB, 0)))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["code"], "STORE_UNAVAILABLE");
    assert!(
        !reply.body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak"
    );
}

#[tokio::test]
async fn serve_answers_on_a_socket_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = api().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_api::serve(
        listener,
        AppState::new(api.engine.clone()),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
