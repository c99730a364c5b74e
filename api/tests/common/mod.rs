//! What the API tests share: a router over a private Redis (testkit), driven with
//! `tower::ServiceExt::oneshot` and no socket, and checks every error reply must pass.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sluice_api::{AppState, router};
use sluice_core::ids;
use sluice_store::engine::Engine;
use sluice_store::{JobStart, Lane, Store, StoreConfig};
use sluice_testkit::{RedisServer, wait_until};
use tower::ServiceExt;

/// A router over a private Redis.
pub struct Api {
    pub redis: RedisServer,
    pub engine: Engine,
    pub app: Router,
}

/// A response: status, headers and the JSON body (`null` when empty; the text of an event
/// stream or of a `text/plain` answer as a string).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub async fn api() -> Api {
    api_with(StoreConfig::default()).await
}

/// A router over a private Redis, with store settings (the URL is filled in).
pub async fn api_with(config: StoreConfig) -> Api {
    let redis = RedisServer::start();
    let store = Store::connect(StoreConfig {
        url: redis.url(),
        ..config
    })
    .await
    .unwrap();
    let engine = Engine::new(store, Arc::new(sluice_core::SystemClock));
    let app = router(AppState::new(engine.clone()));
    Api { redis, engine, app }
}

/// Checks the shape every error response must have.
pub fn assert_problem(reply: &Reply) {
    assert_eq!(
        reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "error responses are problems: {} {}",
        reply.status,
        reply.body
    );
    let code = reply.body["code"].as_str().expect("a problem has a code");
    assert_eq!(
        reply.body["type"],
        format!(
            "https://sluice.dev/problems/{}",
            code.to_lowercase().replace('_', "-")
        )
    );
    assert_eq!(reply.body["status"], reply.status.as_u16());
    assert!(reply.body["title"].is_string());
    assert!(reply.body["detail"].is_string());
}

/// A pipeline of two `noop` steps, `build` then `ship`.
pub const TWO_STEPS: &str = r#"{"id": "two", "steps": [
    {"name": "build", "kind": "noop"}, {"name": "ship", "kind": "noop"}]}"#;

impl Api {
    /// Applies [`TWO_STEPS`] as pipeline `two`.
    pub async fn apply_two_steps(&self) {
        let body: Value = serde_json::from_str(TWO_STEPS).unwrap();
        let r = self.call(Method::PUT, "/v1/pipelines/two", Some(body)).await;
        assert!(r.status.is_success(), "{r:?}");
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let head = request.method() == Method::HEAD;
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        let event_stream = content_type.is_some_and(|v| v.starts_with(b"text/event-stream"));
        let text = content_type.is_some_and(|v| v.starts_with(b"text/plain"));
        let body = if bytes.is_empty() {
            Value::Null
        } else if event_stream || text {
            // A stream that ended (`once=true`), or metrics: its text.
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        let reply = Reply {
            status,
            headers,
            body,
        };
        // A HEAD answer has no body to check.
        if !head && (status.is_client_error() || status.is_server_error()) {
            assert_problem(&reply);
        }
        reply
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder().method(method).uri(uri);
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    /// `POST /v1/jobs/{id}/result` with `body`, and the `Idempotency-Key` header when `key`
    /// is given.
    pub async fn post_result(&self, id: &str, key: Option<&str>, body: Value) -> Reply {
        let mut builder = Request::post(format!("/v1/jobs/{id}/result"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap()).await
    }

    /// Leases and starts job `id` of queue `default` as worker `w`.
    pub async fn run_job(&self, id: &str) {
        let store = self.engine.store();
        let now = self.engine.now();
        let deadline = now + 60_000;
        let shard = ids::shard_of(id, ids::JOB).unwrap();
        let leased = store
            .lease(shard, "default", Lane::Builtin, "w", 1, deadline, now, 10)
            .await
            .unwrap();
        assert_eq!(leased.jobs.len(), 1);
        assert_eq!(leased.jobs[0].id, id);
        let token = leased.jobs[0].lease.as_ref().unwrap().token.clone();
        assert_eq!(
            store.start(&leased.jobs[0], &token, deadline, now).await.unwrap(),
            JobStart::Started { attempt: 1 }
        );
    }
}

/// A worker of queue `default` beside the API, over the same store (so it records into the
/// same metrics, as in `sluice up`); stopped when the returned sender drops.
pub fn worker(api: &Api) -> tokio::sync::oneshot::Sender<()> {
    let config = sluice_worker::WorkerConfig {
        concurrency: 2,
        idle_poll: Duration::from_millis(100),
        ..sluice_worker::WorkerConfig::default()
    };
    let worker = sluice_worker::Worker::new(api.engine.clone(), config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    stop
}

/// Applies `pipeline` and starts it; the execution id.
pub async fn run(api: &Api, pipeline: Value) -> String {
    let id = pipeline["id"].as_str().unwrap().to_string();
    let applied = api.call(Method::PUT, &format!("/v1/pipelines/{id}"), Some(pipeline)).await;
    assert!(applied.status.is_success(), "{applied:?}");
    let started = api.call(Method::POST, "/v1/executions", Some(json!({"pipeline": id, "input": {}}))).await;
    assert_eq!(started.status, StatusCode::CREATED, "{started:?}");
    started.body["id"].as_str().unwrap().to_string()
}

/// Waits for execution `id` to settle (no longer running, blocked or paused); its view.
pub async fn settled(api: &Api, id: &str) -> Value {
    wait_until(Duration::from_secs(20), "the execution to settle", || async {
        let e = api.call(Method::GET, &format!("/v1/executions/{id}"), None).await.body;
        (!matches!(e["status"].as_str(), Some("running" | "blocked" | "paused"))).then_some(e)
    })
    .await
}
