//! Queue figures, pause and resume over HTTP, against a real Redis (testkit): the figures
//! follow jobs through their states, a paused queue hands out no job until it is resumed,
//! bad queue names are 400 naming the parameter, and only an admin may pause or resume.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Api, Reply, api};
use serde_json::{Value, json};
use sluice_api::auth::{Secret, Token};
use sluice_api::{AppState, Auth, Role, router};
use sluice_core::{Outcome, ids};
use sluice_store::engine::Settled;
use sluice_store::{JobStart, WorkerInfo};

/// Enqueues a noop job on `queue` (with `extra` fields); returns its id.
async fn enqueue(api: &Api, queue: &str, extra: Value) -> String {
    let mut body = json!({"queue": queue, "kind": "noop"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let r = api.call(Method::POST, "/v1/jobs", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    r.body["job"]["id"].as_str().unwrap().to_string()
}

/// Enqueues `n` ready noop jobs on `queue`; their ids.
async fn enqueue_many(api: &Api, queue: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(enqueue(api, queue, json!({})).await);
    }
    ids
}

/// Leases up to `max` jobs of `queue` (shard 0, the only one) as worker `w`.
async fn lease(api: &Api, queue: &str, max: usize) -> Vec<sluice_core::Job> {
    let now = api.engine.now();
    api.engine
        .store()
        .lease(0, queue, sluice_store::Lane::Builtin, "w", max, now + 60_000, now, 10)
        .await
        .unwrap()
        .jobs
}

/// Starts a leased job; returns its token.
async fn start(api: &Api, job: &sluice_core::Job) -> String {
    let now = api.engine.now();
    let token = job.lease.as_ref().unwrap().token.clone();
    let started = api.engine.store().start(job, &token, now + 60_000, now).await.unwrap();
    assert_eq!(started, JobStart::Started { attempt: 1 });
    token
}

async fn get(api: &Api, uri: &str) -> Reply {
    api.call(Method::GET, uri, None).await
}

async fn post(api: &Api, uri: &str) -> Reply {
    api.call(Method::POST, uri, None).await
}

/// The figures that count jobs, in the order of the schema.
fn counts(queue: &Value) -> [u64; 8] {
    ["ready", "delayed", "reserved", "running", "completed", "failed", "retried", "cancelled"]
        .map(|k| queue[k].as_u64().unwrap_or_else(|| panic!("{k} in {queue}")))
}

#[tokio::test]
async fn queue_figures_follow_jobs_through_their_states() {
    let api = api().await;
    let empty = get(&api, "/v1/queues").await;
    assert_eq!((empty.status, &empty.body), (StatusCode::OK, &json!({"items": []})));

    let mail: Vec<String> = enqueue_many(&api, "mail", 4).await;
    enqueue(&api, "mail", json!({"delay": "1h"})).await;
    let delayed = enqueue(&api, "mail", json!({"delay": "1h"})).await;
    enqueue(&api, "reports", json!({})).await;

    // Of the four ready jobs: one completes, one runs, one sits reserved, one waits.
    let leased = lease(&api, "mail", 3).await;
    assert_eq!(leased.len(), 3);
    assert!(leased.iter().all(|j| mail.contains(&j.id)));
    let token = start(&api, &leased[0]).await;
    start(&api, &leased[1]).await;
    let mut done = api.engine.store().get_job(&leased[0].id).await.unwrap().unwrap();
    done.attempts = 1;
    let settled = api.engine.settle(&done, &token, &Outcome::Completed(json!(1)), None, 0).await.unwrap();
    assert!(matches!(settled, Settled::Applied(_)), "{settled:?}");
    // One delayed job is cancelled.
    let r = post(&api, &format!("/v1/jobs/{delayed}/cancel")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // A worker serving `mail` registers itself.
    let now = api.engine.now();
    let worker = WorkerInfo {
        id: "w-mail".into(),
        queues: vec!["mail".into()],
        concurrency: 2,
        host: "h".into(),
        pid: 1,
        started_at: now,
        version: "0".into(),
        last_seen: now,
    };
    api.engine.store().register_worker(&worker, 60_000).await.unwrap();

    let all = get(&api, "/v1/queues").await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    let items = all.body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|q| q["queue"].as_str().unwrap()).collect();
    assert_eq!(names, ["mail", "reports"]);
    let mail_stats = &items[0];
    assert_eq!(counts(mail_stats), [1, 1, 1, 1, 1, 0, 0, 1], "{mail_stats}");
    assert!(mail_stats["oldest_ready_age_ms"].as_u64().is_some(), "{mail_stats}");
    assert_eq!((&mail_stats["paused"], &mail_stats["workers"]), (&json!(false), &json!(["w-mail"])));
    assert_eq!(counts(&items[1]), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(items[1]["workers"], json!([]));

    // One queue, by path or by query: the same figures.
    let one = get(&api, "/v1/queues/mail").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(counts(&one.body), counts(mail_stats));
    let only = get(&api, "/v1/queues?queue=reports").await;
    assert_eq!(only.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(only.body["items"][0]["queue"], "reports");

    // A queue that never held a job has zero figures.
    let unseen = get(&api, "/v1/queues/never-used").await;
    assert_eq!(unseen.status, StatusCode::OK, "{unseen:?}");
    assert_eq!(
        unseen.body,
        json!({"queue": "never-used", "ready": 0, "external_ready": 0, "delayed": 0, "reserved": 0, "running": 0,
               "completed": 0, "failed": 0, "retried": 0, "cancelled": 0,
               "oldest_ready_age_ms": null, "paused": false, "workers": []})
    );
}

#[tokio::test]
async fn a_paused_queue_hands_out_no_job_until_resumed() {
    let api = api().await;
    let id = enqueue(&api, "mail", json!({})).await;
    assert_eq!(ids::shard_of(&id, ids::JOB), Ok(0));

    for _ in 0..2 {
        let paused = post(&api, "/v1/queues/mail/pause").await;
        assert_eq!(paused.status, StatusCode::OK, "pause is idempotent: {paused:?}");
        assert_eq!((&paused.body["paused"], &paused.body["ready"]), (&json!(true), &json!(1)));
    }
    assert!(lease(&api, "mail", 5).await.is_empty(), "a paused queue hands out nothing");
    assert_eq!(get(&api, "/v1/queues/mail").await.body["paused"], true);
    // Enqueueing goes on while paused.
    enqueue(&api, "mail", json!({})).await;
    assert_eq!(get(&api, "/v1/queues/mail").await.body["ready"], 2);

    for _ in 0..2 {
        let resumed = post(&api, "/v1/queues/mail/resume").await;
        assert_eq!(resumed.status, StatusCode::OK, "resume is idempotent: {resumed:?}");
        assert_eq!(resumed.body["paused"], false);
    }
    assert_eq!(lease(&api, "mail", 5).await.len(), 2);

    // A queue can be paused before its first job.
    let early = post(&api, "/v1/queues/later/pause").await;
    assert_eq!((early.status, &early.body["paused"]), (StatusCode::OK, &json!(true)));
    enqueue(&api, "later", json!({})).await;
    assert!(lease(&api, "later", 1).await.is_empty());
}

#[tokio::test]
async fn a_bad_queue_name_is_400_naming_the_parameter() {
    let api = api().await;
    let long = "q".repeat(65);
    for (method, uri, field) in [
        (Method::GET, "/v1/queues/a%20b".to_string(), "`q`"),
        (Method::GET, "/v1/queues/a%2Fb".to_string(), "`q`"),
        (Method::GET, format!("/v1/queues/{long}"), "`q`"),
        (Method::POST, "/v1/queues/a%20b/pause".to_string(), "`q`"),
        (Method::POST, "/v1/queues/%C3%A9/resume".to_string(), "`q`"),
        (Method::GET, "/v1/queues?queue=a%20b".to_string(), "`queue`"),
    ] {
        let r = api.call(method.clone(), &uri, None).await;
        assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_REQUEST")), "{method} {uri}");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.starts_with(field) && detail.contains("not a valid queue name"), "{detail}");
    }
    // Nothing was paused by the refused calls.
    assert_eq!(get(&api, "/v1/queues/a").await.body["paused"], false);
}

const ADMIN: &str = "admin-token-for-the-queue-tests-0";
const USER: &str = "user-token-for-the-queue-tests-00";
const WORKER: &str = "worker-token-for-the-queue-tests0";

/// `method uri` with `token` as the bearer token.
async fn call_as(api: &Api, method: Method, uri: &str, token: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    api.send(request).await
}

#[tokio::test]
async fn only_an_admin_may_pause_or_resume_a_queue() {
    let mut api = api().await;
    let token = |subject: &str, role, secret: &str| Token { subject: subject.into(), role, secret: Secret::new(secret) };
    let auth = Auth::tokens([
        token("ada", Role::Admin, ADMIN),
        token("uma", Role::User, USER),
        token("wes", Role::Worker, WORKER),
    ]);
    api.app = router(AppState::new(api.engine.clone()).with_auth(auth));

    for action in ["pause", "resume"] {
        let refused = call_as(&api, Method::POST, &format!("/v1/queues/mail/{action}"), USER).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
        assert_eq!((refused.body["role"].as_str(), refused.body["required_role"].as_str()), (Some("user"), Some("admin")));
    }
    let read = call_as(&api, Method::GET, "/v1/queues/mail", USER).await;
    assert_eq!((read.status, &read.body["paused"]), (StatusCode::OK, &json!(false)), "a refused pause changes nothing");
    assert_eq!(call_as(&api, Method::GET, "/v1/queues", USER).await.status, StatusCode::OK);
    for uri in ["/v1/queues", "/v1/queues/mail"] {
        assert_eq!(call_as(&api, Method::GET, uri, WORKER).await.status, StatusCode::FORBIDDEN, "{uri}");
    }

    let paused = call_as(&api, Method::POST, "/v1/queues/mail/pause", ADMIN).await;
    assert_eq!((paused.status, &paused.body["paused"]), (StatusCode::OK, &json!(true)), "{paused:?}");
    let resumed = call_as(&api, Method::POST, "/v1/queues/mail/resume", ADMIN).await;
    assert_eq!((resumed.status, &resumed.body["paused"]), (StatusCode::OK, &json!(false)));
}
