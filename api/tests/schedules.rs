//! Schedules over HTTP against a real Redis: every problem of a body named by its field,
//! 404 `SCHEDULE_NOT_FOUND` on every route, `run-now` refused with 409 `TARGET_BUSY` while
//! the target is busy, re-enabling recomputing `next_run_at` from now, and the history of
//! run-now fires with their executions.

mod common;

use axum::http::{Method, StatusCode};
use common::{Api, api};
use serde_json::json;

async fn apply(api: &Api) {
    api.apply_two_steps().await;
}

fn fields(reply: &common::Reply) -> Vec<&str> {
    reply.body["problems"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn every_problem_of_a_schedule_body_names_its_field() {
    let api = api().await;
    apply(&api).await;
    let r = api
        .call(
            Method::POST,
            "/v1/schedules",
            Some(json!({"name": "n", "pipeline": "two", "cron": "0 25 * * *", "timezone": "Mars/Base", "overlap": "never"})),
        )
        .await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("VALIDATION_FAILED")));
    let named = fields(&r);
    for field in ["cron", "timezone", "overlap"] {
        assert!(named.contains(&field), "{field} missing from {named:?}");
    }
    let r = api.call(Method::POST, "/v1/schedules", Some(json!({"name": "n", "pipeline": "nope", "every": "30s"}))).await;
    assert_eq!(fields(&r), ["every"], "{:#}", r.body);
    let r = api.call(Method::POST, "/v1/schedules", Some(json!({"name": "n", "pipeline": "nope", "every": "1h"}))).await;
    assert_eq!(fields(&r), ["pipeline"], "an unknown pipeline: {:#}", r.body);
    let r = api.call(Method::POST, "/v1/schedules", Some(json!([1]))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let r = api.call(Method::POST, "/v1/schedules", Some(json!({"name": "n", "pipeline": "two", "every": "1h"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.call(Method::PATCH, "/v1/schedules/n", Some(json!({"every": "2h", "cron": "@daily", "weekdays": [0]}))).await;
    assert_eq!(fields(&r), ["weekdays[0]", "every"], "{:#}", r.body);
}

#[tokio::test]
async fn every_route_of_a_missing_schedule_is_404() {
    let api = api().await;
    for (method, uri) in [
        (Method::GET, "/v1/schedules/nope"),
        (Method::GET, "/v1/schedules/sch_0_01JD0000000000000000000000"),
        (Method::GET, "/v1/schedules/sch_9_01JD0000000000000000000000"),
        (Method::PATCH, "/v1/schedules/nope"),
        (Method::DELETE, "/v1/schedules/nope"),
        (Method::POST, "/v1/schedules/nope/run-now"),
        (Method::GET, "/v1/schedules/nope/runs"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({}));
        let r = api.call(method.clone(), uri, body).await;
        assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("SCHEDULE_NOT_FOUND")), "{method} {uri}");
    }
}

#[tokio::test]
async fn run_now_on_a_busy_target_is_409_and_re_enabling_recomputes_the_due_time_from_now() {
    let api = api().await;
    apply(&api).await;
    let r = api
        .call(Method::POST, "/v1/schedules", Some(json!({"name": "web", "pipeline": "two", "cron": "* * * * *", "target": "repo:web"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap().to_string();

    // A manual execution holds the target: run-now is refused, naming it.
    let held = api.call(Method::POST, "/v1/executions", Some(json!({"pipeline": "two", "target": "repo:web"}))).await;
    let holder = held.body["id"].as_str().unwrap();
    let r = api.call(Method::POST, &format!("/v1/schedules/{id}/run-now"), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::CONFLICT, Some("TARGET_BUSY")));
    assert_eq!(r.body["execution_id"], holder);
    let r = api.call(Method::GET, &format!("/v1/schedules/{id}/runs"), None).await;
    assert_eq!(r.body["items"], json!([]), "a refused run-now records nothing");

    // Once the target is free, run-now starts an execution on it.
    api.call(Method::POST, &format!("/v1/executions/{holder}/cancel"), None).await;
    let r = api.call(Method::POST, "/v1/schedules/web/run-now", None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:#}", r.body);
    let exec = r.body["run"]["execution_id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/v1/executions/{exec}"));
    assert_eq!(r.body["run"]["trigger"], "run_now");
    let e = api.call(Method::GET, &format!("/v1/executions/{exec}"), None).await;
    assert_eq!((e.body["target"].as_str(), e.body["pipeline_id"].as_str()), (Some("repo:web"), Some("two")));

    // Disabled: no due time. Re-enabled: the first fire time after now, never one before.
    let r = api.call(Method::PATCH, &format!("/v1/schedules/{id}"), Some(json!({"enabled": false}))).await;
    assert_eq!((r.body["enabled"].as_bool(), r.body.get("next_run_at")), (Some(false), None));
    let before = api.engine.now();
    let r = api.call(Method::PATCH, &format!("/v1/schedules/{id}"), Some(json!({"enabled": true}))).await;
    let next = r.body["next_run_at"].as_i64().unwrap();
    assert!(next > before, "{next} is not after {before}");
    assert_eq!(next % 60_000, 0, "a minute boundary");
    assert!(next - before <= 60_000, "the first one after now");

    // The history lists the run-now with its execution's status.
    let r = api.call(Method::GET, &format!("/v1/schedules/{id}/runs"), None).await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0]["execution_id"].as_str(), items[0]["status"].as_str()), (Some(exec.as_str()), Some("running")));

    // Listing, by filter.
    let r = api.call(Method::GET, "/v1/schedules?pipeline=two&enabled=true", None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    let r = api.call(Method::GET, "/v1/schedules?pipeline=other", None).await;
    assert_eq!(r.body["items"], json!([]));
}
