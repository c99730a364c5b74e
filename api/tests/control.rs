//! Operator actions, listings and execution events over HTTP, against a real Redis: each
//! happy path and each error code.

mod common;

use axum::http::{Method, StatusCode};
use common::{Api, api};
use serde_json::{Value, json};

async fn apply(api: &Api) {
    api.apply_two_steps().await;
}

async fn start(api: &Api, target: Option<&str>) -> String {
    let mut body = json!({"pipeline": "two"});
    if let Some(t) = target {
        body["target"] = json!(t);
    }
    let r = api.call(Method::POST, "/v1/executions", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    r.body["id"].as_str().unwrap().to_string()
}

async fn post(api: &Api, uri: &str, body: Option<Value>) -> common::Reply {
    api.call(Method::POST, uri, body).await
}

#[tokio::test]
async fn cancel_then_retry_over_http_with_audit_and_events() {
    let api = api().await;
    apply(&api).await;
    let id = start(&api, Some("svc:a")).await;

    // Retry of a running execution is refused.
    let r = post(&api, &format!("/v1/executions/{id}/retry"), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::CONFLICT, Some("EXECUTION_NOT_RETRYABLE")));
    assert_eq!(r.body["execution_status"], "running");

    // Cancel with a reason; an empty body works too and is idempotent.
    let r = post(&api, &format!("/v1/executions/{id}/cancel"), Some(json!({"reason": "wrong build"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(r.body["audit"][0]["action"], "cancel");
    assert_eq!(r.body["audit"][0]["actor"], "anonymous");
    assert_eq!(r.body["audit"][0]["reason"], "wrong build");
    let again = post(&api, &format!("/v1/executions/{id}/cancel"), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["audit"].as_array().unwrap().len(), 1, "a repeated cancel changes nothing");

    // The target is free again: another execution takes it, so a retry is TARGET_BUSY.
    let other = start(&api, Some("svc:a")).await;
    let r = post(&api, &format!("/v1/executions/{id}/retry"), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::CONFLICT, Some("TARGET_BUSY")));
    assert_eq!(r.body["execution_id"], other);
    post(&api, &format!("/v1/executions/{other}/cancel"), None).await;
    let r = post(&api, &format!("/v1/executions/{id}/retry"), Some(json!({"reason": "try again"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!((r.body["id"].as_str(), r.body["run"].as_u64()), (Some(id.as_str()), Some(2)));
    assert_eq!(r.body["failure_history"][0]["kind"], "cancelled");

    let events = api.call(Method::GET, &format!("/v1/executions/{id}/events"), None).await;
    assert_eq!(events.status, StatusCode::OK);
    let types: Vec<&str> = events.body["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in ["execution.started", "job.enqueued", "job.cancelled", "execution.cancelled", "execution.retried"] {
        assert!(types.contains(&expected), "{expected} missing from {types:?}");
    }
}

#[tokio::test]
async fn pause_resume_and_restart_codes() {
    let api = api().await;
    apply(&api).await;
    let id = start(&api, None).await;
    let r = post(&api, &format!("/v1/executions/{id}/resume"), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::CONFLICT, Some("EXECUTION_NOT_PAUSED")));
    let r = post(&api, &format!("/v1/executions/{id}/pause"), Some(json!({}))).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("paused")));
    let r = post(&api, &format!("/v1/executions/{id}/pause"), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::CONFLICT, Some("EXECUTION_NOT_PAUSABLE")));
    let r = post(&api, &format!("/v1/executions/{id}/resume"), Some(json!({"reason": "go"}))).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("running")));
    let types: Vec<String> = api.call(Method::GET, &format!("/v1/executions/{id}/events"), None).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains(&"workflow.instance.resumed".to_string()), "{types:?}");

    // Restart: out of range, past a step that has not succeeded, unknown name, bad body.
    for (body, code) in [
        (json!({"from_step": 5}), "STEP_OUT_OF_RANGE"),
        (json!({"from_step": 1}), "STEP_OUT_OF_RANGE"),
        (json!({"from_step": "deploy"}), "STEP_OUT_OF_RANGE"),
        (json!({"from_step": true}), "VALIDATION_FAILED"),
        (json!({"reason": "no step"}), "VALIDATION_FAILED"),
    ] {
        let r = post(&api, &format!("/v1/executions/{id}/restart"), Some(body.clone())).await;
        assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{body}");
    }
    let r = post(&api, &format!("/v1/executions/{id}/restart"), Some(json!({"from_step": "build"}))).await;
    assert_eq!((r.status, r.body["run"].as_u64()), (StatusCode::OK, Some(2)), "{r:?}");
    assert_eq!(r.body["audit"].as_array().unwrap().len(), 3);

    // Unknown and malformed ids are 404 for every action.
    for action in ["cancel", "retry", "restart", "pause", "resume", "events"] {
        let method = if action == "events" { Method::GET } else { Method::POST };
        for bad in ["ex_0_01JD0000000000000000000000", "nope"] {
            let body = (action == "restart").then(|| json!({"from_step": 0}));
            let r = api.call(method.clone(), &format!("/v1/executions/{bad}/{action}"), body).await;
            assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("EXECUTION_NOT_FOUND")), "{action} {bad}");
        }
    }
}

#[tokio::test]
async fn listings_filter_and_page() {
    let api = api().await;
    apply(&api).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(start(&api, Some(&format!("svc:{i}"))).await);
    }
    post(&api, &format!("/v1/executions/{}/cancel", ids[0]), None).await;

    let mut seen = Vec::new();
    let mut uri = "/v1/executions?limit=2".to_string();
    loop {
        let r = api.call(Method::GET, &uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        seen.extend(r.body["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match r.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/executions?limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each once");

    let r = api.call(Method::GET, "/v1/executions?status=cancelled", None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = api.call(Method::GET, "/v1/executions?target=svc:3&pipeline=two", None).await;
    assert_eq!(r.body["items"][0]["id"], ids[3]);
    for bad in ["status=done", "limit=0", "limit=500", "cursor=xyz"] {
        let r = api.call(Method::GET, &format!("/v1/executions?{bad}"), None).await;
        assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_REQUEST")), "{bad}");
    }
}
