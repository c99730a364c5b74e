//! The OpenAPI document against the official schema and against the router it describes.
//!
//! - The served document is valid OpenAPI 3.1: it validates against the JSON Schema the
//!   OpenAPI Initiative publishes (vendored in `tests/data/`, see its README).
//! - The document describes exactly the routes the router serves: the routes and the
//!   operations come from the same registrations (`routes!` in `src/routes/mod.rs`), and
//!   here every documented operation is probed on the real router, which must not answer
//!   it 404 `NOT_FOUND` or 405, while every other method of a documented path answers 405
//!   and undocumented paths answer 404.
//! - What the router answers is what the document says: every probed status is documented
//!   for its operation, with its content type, and every body validates against the
//!   documented schema, closed to undocumented members.
//!
//! Each test starts its own `redis-server` (testkit).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde_json::{Map, Value, json};
use sluice_api::{BODY_LIMIT, DOCUMENT_PATH};
use sluice_store::StoreConfig;

/// The JSON Schema of OpenAPI 3.1 documents (`$id` `https://spec.openapis.org/oas/3.1/schema/2022-10-07`).
const OPENAPI_31_SCHEMA: &str = include_str!("data/openapi-3.1-schema-2022-10-07.json");

/// The methods a path can be asked for (HEAD is answered for every GET; see
/// `head_is_answered_wherever_get_is`).
const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"];

mod common;

use common::{Api, Reply, api_with};

/// A router over a private Redis whose calls fail fast once a test has stopped the server.
async fn api() -> Api {
    api_with(StoreConfig {
        response_timeout: std::time::Duration::from_millis(300),
        ..StoreConfig::default()
    })
    .await
}

/// `method` on `uri`, with `body` as JSON.
async fn call(api: &Api, method: &str, uri: &str, body: Option<Value>) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    api.call(method, uri, body).await
}

/// The document as served.
async fn document(api: &Api) -> Value {
    let reply = call(api, "GET", DOCUMENT_PATH, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    reply.body
}

/// The content type of `reply`.
fn content_type(reply: &Reply) -> Option<&str> {
    reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// `(METHOD, path template)` of every operation of `document`.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

/// A concrete URI for a path template: every `{parameter}` becomes `probe`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "probe"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The URI that probes `operation` at `template`: [`concrete`], and for an event stream
/// `once=true`, so that the stream ends once it has caught up.
fn probe(operation: &Value, template: &str) -> String {
    let streams = operation["responses"]["200"]["content"]
        .get("text/event-stream")
        .is_some();
    if streams {
        format!("{}?once=true", concrete(template))
    } else {
        concrete(template)
    }
}

/// Whether `reply` says the router has no such route or method.
fn is_unrouted(reply: &Reply) -> bool {
    reply.status == StatusCode::METHOD_NOT_ALLOWED
        || (reply.status == StatusCode::NOT_FOUND && reply.body["code"] == "NOT_FOUND")
}

/// Closes every object schema that lists its properties to members it does not list
/// (`unevaluatedProperties: false`), so that a served member the document lacks fails
/// validation. Objects inside `allOf`/`oneOf`/`anyOf` are left open and the composition is
/// closed instead (where it is not itself a branch), since members are evaluated across
/// its branches.
fn close(schema: &mut Value, in_branch: bool) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let composed = ["allOf", "oneOf", "anyOf"]
        .iter()
        .any(|k| map.contains_key(*k));
    let lists_properties = map.contains_key("properties") || composed;
    if lists_properties && !in_branch && !map.contains_key("additionalProperties") {
        map.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "allOf" | "oneOf" | "anyOf" => child
                .as_array_mut()
                .into_iter()
                .flatten()
                .for_each(|branch| close(branch, true)),
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|properties| properties.values_mut())
                .for_each(|property| close(property, false)),
            "items" | "additionalProperties" => close(child, false),
            _ => {}
        }
    }
}

/// Component schemas that are branches of a composition elsewhere: they stay open (their
/// members are evaluated together with their siblings').
fn composed_components(schemas: &Map<String, Value>) -> BTreeSet<String> {
    fn walk(value: &Value, in_branch: bool, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if in_branch
                    && let Some(Value::String(target)) = map.get("$ref")
                    && let Some(name) = target.strip_prefix("#/components/schemas/")
                {
                    found.insert(name.to_string());
                }
                for (key, child) in map {
                    let branch = matches!(key.as_str(), "allOf" | "oneOf" | "anyOf");
                    match child {
                        Value::Array(items) if branch => {
                            items.iter().for_each(|item| walk(item, true, found));
                        }
                        other => walk(other, false, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, false, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    schemas.values().for_each(|s| walk(s, false, &mut found));
    found
}

/// Checks served replies against the operations of the document.
struct Checker {
    document: Value,
    /// The document's component schemas, closed (see [`close`]).
    components: Value,
}

impl Checker {
    fn new(document: Value) -> Self {
        let mut schemas = document["components"]["schemas"]
            .as_object()
            .unwrap()
            .clone();
        let composed = composed_components(&schemas);
        for (name, schema) in schemas.iter_mut() {
            close(schema, composed.contains(name));
        }
        Checker {
            document,
            components: json!({ "schemas": schemas }),
        }
    }

    /// Asserts that `reply` to `method` on the operation at `template` is documented: its
    /// status, its content type, and its body's schema.
    fn check(&self, method: &str, template: &str, reply: &Reply) {
        let what = format!("{method} {template} answered {}", reply.status);
        let operation = &self.document["paths"][template][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{what}: the operation is not documented"
        );
        let response = &operation["responses"][reply.status.as_str()];
        assert!(
            response.is_object(),
            "{what}: the status is not documented: {}",
            reply.body
        );
        let content = response["content"].as_object().unwrap();
        let content_type = content_type(reply).unwrap_or("(none)");
        let media = content
            .get(content_type)
            .unwrap_or_else(|| panic!("{what}: `{content_type}` is not documented"));
        let mut schema = media["schema"].clone();
        close(&mut schema, false);
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&reply.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the body does not match its schema: {errors:#?}\n{:#}",
            reply.body
        );
    }
}

fn release() -> Value {
    json!({
        "name": "Release",
        "description": "Build, then say so.",
        "steps": [
            {"name": "build", "kind": "command", "run": ["make", "build"], "timeout": "10m",
             "env": {"LANG": "C"}, "retry": {"max_attempts": 2, "backoff": "fixed", "initial": "1s"}},
            {"name": "done", "kind": "noop", "output": {"ok": true}},
        ]
    })
}

/// A pipeline with a step of each kind, gates with both probes and a helper.
fn every_kind() -> Value {
    json!({
        "steps": [
            {"name": "build", "kind": "command", "run": ["make"]},
            {"name": "ci", "kind": "gate", "probe": {"run": ["./ci-status"]}, "interval": "30s",
             "max_polls": 120, "on_exhausted": "pass", "watch_window": "30m",
             "helper": {"kind": "command", "run": ["./fix-ci"], "timeout": "5m"},
             "max_attempts": 3},
            {"name": "up", "kind": "gate", "probe": {"url": "http://monitor/up",
             "headers": {"Accept": "application/json"}}, "interval": "1m", "max_polls": 10,
             "on_exhausted": "rearm"},
            {"name": "approve", "kind": "approval", "required_approvals": 2,
             "approvers": ["role:admin", "release-manager"]},
            {"name": "deploy", "kind": "http", "url": "http://deployer/deploy",
             "headers": {"Authorization": "Bearer {{ input.token }}"}, "result_timeout": "1h"},
            {"name": "soak", "kind": "sleep", "for": "15m"},
            {"name": "window", "kind": "sleep", "until": "2026-12-01T10:00:00Z"},
            {"name": "label", "kind": "external", "queue": "labeler", "params": {"a": 1}},
            {"name": "done", "kind": "noop"},
        ]
    })
}

// ----- the document ---------------------------------------------------------------------

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let api = api().await;
    let document = document(&api).await;
    assert_eq!(
        document,
        serde_json::to_value(sluice_api::openapi()).unwrap()
    );
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "sluice");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let meta: Value = serde_json::from_str(OPENAPI_31_SCHEMA).unwrap();
    assert_eq!(
        meta["$id"],
        "https://spec.openapis.org/oas/3.1/schema/2022-10-07"
    );
    let validator = jsonschema::validator_for(&meta).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // The validator does reject what is not OpenAPI 3.1.
    let mut wrong = document.clone();
    wrong["openapi"] = json!("3.0.3");
    assert!(!validator.is_valid(&wrong));
    let mut wrong = document.clone();
    wrong["paths"]["/v1/jobs"]["post"]["responses"]["201"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    assert!(!validator.is_valid(&wrong));
    let mut wrong = document;
    wrong["paths"]["/v1/jobs"]["post"]["colour"] = json!("blue");
    assert!(!validator.is_valid(&wrong));
}

#[tokio::test]
async fn the_document_lists_every_route_of_the_api() {
    let api = api().await;
    let served: BTreeSet<(String, String)> = operations(&document(&api).await);
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/pipelines"),
        ("PUT", "/v1/pipelines/{id}"),
        ("GET", "/v1/pipelines/{id}"),
        ("POST", "/v1/executions"),
        ("GET", "/v1/executions"),
        ("GET", "/v1/executions/{id}"),
        ("POST", "/v1/executions/{id}/cancel"),
        ("POST", "/v1/executions/{id}/retry"),
        ("POST", "/v1/executions/{id}/restart"),
        ("POST", "/v1/executions/{id}/pause"),
        ("POST", "/v1/executions/{id}/resume"),
        ("GET", "/v1/executions/{id}/events"),
        ("POST", "/v1/executions/{id}/steps/{step}/approve"),
        ("POST", "/v1/executions/{id}/steps/{step}/reject"),
        ("POST", "/v1/executions/{id}/steps/{step}/request-changes"),
        ("GET", "/v1/events"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/{id}"),
        ("POST", "/v1/jobs/{id}/cancel"),
        ("GET", "/v1/queues"),
        ("GET", "/v1/queues/{q}"),
        ("POST", "/v1/queues/{q}/pause"),
        ("POST", "/v1/queues/{q}/resume"),
        ("POST", "/v1/queues/{q}/lease"),
        ("POST", "/v1/jobs/{id}/heartbeat"),
        ("POST", "/v1/jobs/{id}/result"),
        ("POST", "/v1/schedules"),
        ("GET", "/v1/schedules"),
        ("GET", "/v1/schedules/{id}"),
        ("PATCH", "/v1/schedules/{id}"),
        ("DELETE", "/v1/schedules/{id}"),
        ("POST", "/v1/schedules/{id}/run-now"),
        ("GET", "/v1/schedules/{id}/runs"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(served, expected);
}

// ----- the document against the router --------------------------------------------------

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_is() {
    let api = api().await;
    let document = document(&api).await;
    let checker = Checker::new(document.clone());
    let documented = operations(&document);
    let mut methods_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (method, path) in &documented {
        methods_of
            .entry(path.clone())
            .or_default()
            .insert(method.clone());
    }

    // Every documented operation reaches a handler, and answers as documented.
    for (method, template) in &documented {
        let operation = &document["paths"][template][method.to_lowercase()];
        let body = operation.get("requestBody").map(|_| json!({}));
        let reply = call(&api, method, &probe(operation, template), body).await;
        assert!(
            !is_unrouted(&reply),
            "{method} {template} is documented but not routed: {reply:?}"
        );
        checker.check(method, template, &reply);
    }

    // Every other method of a documented path is 405, with the documented ones in `Allow`.
    for (template, allowed) in &methods_of {
        for method in METHODS.iter().filter(|m| !allowed.contains(**m)) {
            let reply = call(&api, method, &concrete(template), None).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template} is not documented but answered {reply:?}"
            );
            assert_eq!(reply.body["code"], "METHOD_NOT_ALLOWED");
        }
    }

    // Paths the document does not have are not routed (some are planned; when they are
    // added, they are documented in the same step).
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v1/openapi.yaml",
        "/v1/workers",
        "/v1/schedules/probe/next",
        "/v1/pipelines/probe/versions",
        "/v1/executions/probe/steps/0/vote",
        "/v2/jobs",
    ] {
        assert!(
            !methods_of.contains_key(path),
            "{path} is documented now: move it"
        );
        for method in METHODS {
            let reply = call(&api, method, path, None).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(reply.body["code"], "NOT_FOUND", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let api = api().await;
    let document = document(&api).await;
    for (method, template) in operations(&document) {
        if method == "GET" {
            let operation = &document["paths"][&template]["get"];
            let reply = call(&api, "HEAD", &probe(operation, &template), None).await;
            assert!(!is_unrouted(&reply), "HEAD {template}: {reply:?}");
            assert_eq!(reply.body, Value::Null, "HEAD {template} has no body");
        }
    }
}

#[tokio::test]
async fn served_answers_match_their_documented_schemas() {
    let mut api = api().await;
    let checker = Checker::new(document(&api).await);
    let check = |method: &str, template: &str, reply: &Reply| {
        checker.check(method, template, reply);
    };

    // Probes and the document itself.
    check(
        "GET",
        "/healthz",
        &call(&api, "GET", "/healthz", None).await,
    );
    check("GET", "/readyz", &call(&api, "GET", "/readyz", None).await);
    check("GET", "/metrics", &call(&api, "GET", "/metrics", None).await);
    check(
        "GET",
        DOCUMENT_PATH,
        &call(&api, "GET", DOCUMENT_PATH, None).await,
    );

    // Pipelines.
    let pipeline = "/v1/pipelines/{id}";
    let created = call(&api, "PUT", "/v1/pipelines/release", Some(release())).await;
    assert_eq!(created.status, StatusCode::CREATED);
    check("PUT", pipeline, &created);
    let same = call(&api, "PUT", "/v1/pipelines/release", Some(release())).await;
    assert_eq!(same.status, StatusCode::OK);
    check("PUT", pipeline, &same);
    // Steps of every kind: their canonical form matches the documented model too.
    let every = call(&api, "PUT", "/v1/pipelines/every-kind", Some(every_kind())).await;
    assert_eq!(every.status, StatusCode::CREATED, "{:#}", every.body);
    check("PUT", pipeline, &every);
    check(
        "GET",
        pipeline,
        &call(&api, "GET", "/v1/pipelines/every-kind", None).await,
    );
    let invalid = call(
        &api,
        "PUT",
        "/v1/pipelines/broken",
        Some(json!({"steps": [{"kind": "foo"}]})),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    check("PUT", pipeline, &invalid);
    check(
        "GET",
        pipeline,
        &call(&api, "GET", "/v1/pipelines/release", None).await,
    );
    check(
        "GET",
        pipeline,
        &call(&api, "GET", "/v1/pipelines/nope", None).await,
    );
    check(
        "GET",
        "/v1/pipelines",
        &call(&api, "GET", "/v1/pipelines", None).await,
    );

    // Executions.
    let start = json!({"pipeline": "release", "input": {"sha": "abc"}, "target": "repo:a",
                       "idempotency_key": "k1"});
    let started = call(&api, "POST", "/v1/executions", Some(start.clone())).await;
    assert_eq!(started.status, StatusCode::CREATED);
    check("POST", "/v1/executions", &started);
    let again = call(&api, "POST", "/v1/executions", Some(start)).await;
    assert_eq!(again.status, StatusCode::OK);
    check("POST", "/v1/executions", &again);
    let busy = call(
        &api,
        "POST",
        "/v1/executions",
        Some(json!({"pipeline": "release", "target": "repo:a"})),
    )
    .await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    check("POST", "/v1/executions", &busy);
    let unknown = call(
        &api,
        "POST",
        "/v1/executions",
        Some(json!({"pipeline": "nope"})),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    check("POST", "/v1/executions", &unknown);
    let exec_id = started.body["id"].as_str().unwrap().to_string();
    let execution = "/v1/executions/{id}";
    for query in ["", "?include=pipeline", "?include=everything"] {
        let uri = format!("/v1/executions/{exec_id}{query}");
        check("GET", execution, &call(&api, "GET", &uri, None).await);
    }

    // The event stream from its start, read to its end (`once=true`), and a bad cursor.
    let events = call(&api, "GET", "/v1/events?after=0&once=true", None).await;
    assert_eq!(events.status, StatusCode::OK);
    let text = events.body.as_str().unwrap();
    assert!(text.contains("event: execution.started\n"), "{text}");
    check("GET", "/v1/events", &events);
    let bad_cursor = call(&api, "GET", "/v1/events?after=yesterday", None).await;
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);
    check("GET", "/v1/events", &bad_cursor);

    // Jobs: the step job, leased (its lease is served without the token), then cancelled
    // too late; a standalone job, deduplicated, then cancelled.
    let step_job = started.body["steps"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    api.run_job(&step_job).await;
    let leased = call(&api, "GET", &format!("/v1/jobs/{step_job}"), None).await;
    assert_eq!(leased.body["lease"]["worker"], "w");
    check("GET", "/v1/jobs/{id}", &leased);
    let exec = call(&api, "GET", &format!("/v1/executions/{exec_id}"), None).await;
    assert_eq!(exec.body["steps"][0]["status"], "running");
    check("GET", execution, &exec);
    let too_late = call(&api, "POST", &format!("/v1/jobs/{step_job}/cancel"), None).await;
    assert_eq!(too_late.status, StatusCode::CONFLICT);
    check("POST", "/v1/jobs/{id}/cancel", &too_late);

    let enqueue = json!({"queue": "reports", "kind": "command",
                         "payload": {"run": ["echo", "hi"], "env": {"A": "b"}, "cwd": "/tmp"},
                         "delay": "1h", "priority": 5, "max_attempts": 2, "dedupe_key": "d",
                         "timeout": "30s"});
    let enqueued = call(&api, "POST", "/v1/jobs", Some(enqueue.clone())).await;
    assert_eq!(enqueued.status, StatusCode::CREATED);
    check("POST", "/v1/jobs", &enqueued);
    let deduplicated = call(&api, "POST", "/v1/jobs", Some(enqueue)).await;
    assert_eq!(deduplicated.status, StatusCode::OK);
    check("POST", "/v1/jobs", &deduplicated);
    let invalid = call(
        &api,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "Bad", "colour": 1})),
    )
    .await;
    check("POST", "/v1/jobs", &invalid);
    let job_id = enqueued.body["job"]["id"].as_str().unwrap().to_string();
    check(
        "GET",
        "/v1/jobs/{id}",
        &call(&api, "GET", &format!("/v1/jobs/{job_id}"), None).await,
    );
    let cancelled = call(&api, "POST", &format!("/v1/jobs/{job_id}/cancel"), None).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    check("POST", "/v1/jobs/{id}/cancel", &cancelled);
    // A failed execution (its step job was cancelled) carries a failure record.
    let failing = call(
        &api,
        "POST",
        "/v1/executions",
        Some(json!({"pipeline": "release"})),
    )
    .await;
    let failing_job = failing.body["steps"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &api,
        "POST",
        &format!("/v1/jobs/{failing_job}/cancel"),
        None,
    )
    .await;
    let failed = call(
        &api,
        "GET",
        &format!("/v1/executions/{}", failing.body["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(failed.body["status"], "failed");
    check("GET", execution, &failed);

    // Queues: every queue, one (known or not), paused and resumed, a bad name; `reports`
    // has a ready job, so its oldest ready age is a number.
    call(&api, "POST", "/v1/jobs", Some(json!({"queue": "reports", "kind": "noop"}))).await;
    let reports = call(&api, "GET", "/v1/queues/reports", None).await;
    assert!(reports.body["oldest_ready_age_ms"].is_u64(), "{reports:?}");
    check("GET", "/v1/queues", &call(&api, "GET", "/v1/queues", None).await);
    check(
        "GET",
        "/v1/queues",
        &call(&api, "GET", "/v1/queues?queue=reports", None).await,
    );
    let bad_query = call(&api, "GET", "/v1/queues?queue=a%20b", None).await;
    assert_eq!(bad_query.status, StatusCode::BAD_REQUEST);
    check("GET", "/v1/queues", &bad_query);
    let queue = "/v1/queues/{q}";
    for uri in ["/v1/queues/reports", "/v1/queues/never-used"] {
        check("GET", queue, &call(&api, "GET", uri, None).await);
    }
    let bad_name = call(&api, "GET", "/v1/queues/a%20b", None).await;
    assert_eq!(bad_name.status, StatusCode::BAD_REQUEST);
    check("GET", queue, &bad_name);
    let paused = call(&api, "POST", "/v1/queues/reports/pause", None).await;
    assert_eq!(paused.body["paused"], true);
    check("POST", "/v1/queues/{q}/pause", &paused);
    let resumed = call(&api, "POST", "/v1/queues/reports/resume", None).await;
    assert_eq!(resumed.body["paused"], false);
    check("POST", "/v1/queues/{q}/resume", &resumed);
    // External workers: lease (a job, then none), heartbeat, result (applied, replayed,
    // refused), and the problems of each.
    let lease = "/v1/queues/{q}/lease";
    let custom = json!({"queue": "media", "kind": "resize-image", "payload": {"w": 64}});
    call(&api, "POST", "/v1/jobs", Some(custom.clone())).await;
    call(&api, "POST", "/v1/jobs", Some(custom)).await;
    let ask = json!({"worker": "thumbs-1", "max": 1, "lease_ttl_ms": 60000});
    let leased = call(&api, "POST", "/v1/queues/media/lease", Some(ask.clone())).await;
    assert_eq!(leased.body["jobs"].as_array().map(Vec::len), Some(1), "{leased:?}");
    check("POST", lease, &leased);
    let second = call(&api, "POST", "/v1/queues/media/lease", Some(ask.clone())).await;
    call(&api, "POST", "/v1/queues/media/lease", Some(ask.clone())).await;
    let none = call(&api, "POST", "/v1/queues/media/lease", Some(ask)).await;
    assert_eq!(none.body, json!({"jobs": []}));
    check("POST", lease, &none);
    check("POST", lease, &call(&api, "POST", "/v1/queues/media/lease", Some(json!({"max": 0}))).await);
    check("POST", lease, &call(&api, "POST", "/v1/queues/a:b/lease", Some(json!({"worker": "w"}))).await);
    let job = &leased.body["jobs"][0];
    let (id, token) = (job["id"].as_str().unwrap(), job["token"].as_str().unwrap());
    let heartbeat = "/v1/jobs/{id}/heartbeat";
    let beat = |token: &str| json!({"token": token, "extend_ms": 60000});
    let held = call(&api, "POST", &format!("/v1/jobs/{id}/heartbeat"), Some(beat(token))).await;
    assert_eq!((held.status, &held.body["cancel_requested"]), (StatusCode::OK, &json!(false)));
    check("POST", heartbeat, &held);
    let lost = call(&api, "POST", &format!("/v1/jobs/{id}/heartbeat"), Some(beat("nope"))).await;
    assert_eq!(lost.body["code"], "LEASE_LOST");
    check("POST", heartbeat, &lost);
    check("POST", heartbeat, &call(&api, "POST", "/v1/jobs/nope/heartbeat", Some(beat(token))).await);
    let result = "/v1/jobs/{id}/result";
    let done = json!({"token": token, "outcome": "completed", "output": {"url": "x.png"}});
    let no_key = api.post_result(id, None, done.clone()).await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);
    check("POST", result, &no_key);
    let applied = api.post_result(id, Some("r1"), done.clone()).await;
    assert_eq!(applied.status, StatusCode::OK, "{applied:?}");
    check("POST", result, &applied);
    let replayed = api.post_result(id, Some("r1"), done.clone()).await;
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    check("POST", result, &replayed);
    let refused = api.post_result(id, Some("r2"), done).await;
    assert_eq!(refused.body["code"], "RESULT_ALREADY_APPLIED");
    check("POST", result, &refused);
    let job = &second.body["jobs"][0];
    let failure = json!({"token": job["token"], "outcome": "failed", "error": "disk full"});
    let retried = api.post_result(job["id"].as_str().unwrap(), Some("r3"), failure).await;
    assert_eq!(retried.body["job_status"], "pending", "{retried:?}");
    check("POST", result, &retried);
    let invalid = api.post_result(id, Some("r4"), json!({"outcome": "done"})).await;
    check("POST", result, &invalid);
    check("POST", result, &api.post_result("nope", Some("r5"), json!({"outcome": "completed"})).await);

    // Schedules: created (and refused), listed, read by id and by name, changed, run now
    // (then refused on the busy target), fired late and skipped by a tick, their history,
    // deleted.
    let schedules = "/v1/schedules";
    let schedule = "/v1/schedules/{id}";
    let nightly = json!({"name": "nightly", "pipeline": "release", "cron": "0 2 * * *",
                         "timezone": "Europe/Berlin", "target": "repo:s", "input": {"a": 1}});
    let created = call(&api, "POST", schedules, Some(nightly.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:#}", created.body);
    check("POST", schedules, &created);
    let windowed = json!({"name": "windowed", "pipeline": "release", "every": "6h",
                          "weekdays": [1, 2, 3, 4, 5], "hours": "22-6", "overlap": "allow",
                          "catch_up": "none", "enabled": false});
    let other = call(&api, "POST", schedules, Some(windowed)).await;
    assert_eq!(other.status, StatusCode::CREATED, "{:#}", other.body);
    check("POST", schedules, &other);
    let taken = call(&api, "POST", schedules, Some(nightly)).await;
    assert_eq!(taken.body["code"], "SCHEDULE_NAME_TAKEN");
    check("POST", schedules, &taken);
    let invalid = call(&api, "POST", schedules, Some(json!({"name": "", "cron": "x", "every": "1h", "colour": 1}))).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    check("POST", schedules, &invalid);
    let first = call(&api, "GET", "/v1/schedules?limit=1", None).await;
    assert_eq!(first.body["next_cursor"], "nightly", "{:#}", first.body);
    check("GET", schedules, &first);
    check("GET", schedules, &call(&api, "GET", "/v1/schedules?cursor=nightly&enabled=false", None).await);
    check("GET", schedules, &call(&api, "GET", "/v1/schedules?limit=0", None).await);
    let id = created.body["id"].as_str().unwrap().to_string();
    for key in [id.as_str(), "nightly", "nope"] {
        check("GET", schedule, &call(&api, "GET", &format!("/v1/schedules/{key}"), None).await);
    }
    let disabled = call(&api, "PATCH", "/v1/schedules/nightly", Some(json!({"enabled": false}))).await;
    assert_eq!(disabled.body["enabled"], false);
    check("PATCH", schedule, &disabled);
    check("PATCH", schedule, &call(&api, "PATCH", "/v1/schedules/nightly", Some(json!({"cron": "nope"}))).await);
    check("PATCH", schedule, &call(&api, "PATCH", "/v1/schedules/nope", Some(json!({}))).await);
    let enabled = call(&api, "PATCH", "/v1/schedules/nightly", Some(json!({"enabled": true, "cron": "* * * * *"}))).await;
    check("PATCH", schedule, &enabled);
    let ran = call(&api, "POST", &format!("/v1/schedules/{id}/run-now"), None).await;
    assert_eq!(ran.status, StatusCode::CREATED, "{:#}", ran.body);
    check("POST", "/v1/schedules/{id}/run-now", &ran);
    let busy = call(&api, "POST", "/v1/schedules/nightly/run-now", None).await;
    assert_eq!(busy.body["code"], "TARGET_BUSY");
    check("POST", "/v1/schedules/{id}/run-now", &busy);
    check("POST", "/v1/schedules/{id}/run-now", &call(&api, "POST", "/v1/schedules/nope/run-now", None).await);
    // Due five minutes ago: a tick skips it (its target is busy with the run above); the
    // other schedule, enabled and due too, fires late.
    let store = api.engine.store();
    let now = api.engine.now();
    for key in ["nightly", "windowed"] {
        let mut s = api.engine.find_schedule(key).await.unwrap().unwrap();
        s.enabled = true;
        let next = sluice_core::schedule::NextRun::Set(Some(now - 5 * 60_000));
        store.put_schedule(&s, s.rev, next, now).await.unwrap();
    }
    let (fired, _) = api.engine.fire_due(0, now, 10).await.unwrap();
    assert_eq!((fired.skipped, fired.dropped), (1, 1), "{fired:?}");
    call(&api, "PATCH", "/v1/schedules/windowed", Some(json!({"catch_up": "one"}))).await;
    let mut s = api.engine.find_schedule("windowed").await.unwrap().unwrap();
    s.next_run_at = Some(now - 5 * 60_000);
    store.put_schedule(&s, s.rev, sluice_core::schedule::NextRun::Set(s.next_run_at), now).await.unwrap();
    let (fired, _) = api.engine.fire_due(0, now, 10).await.unwrap();
    assert_eq!(fired.fired, 1, "{fired:?}");
    let runs = "/v1/schedules/{id}/runs";
    let history = call(&api, "GET", "/v1/schedules/nightly/runs", None).await;
    let statuses: Vec<&str> = history.body["items"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["skipped", "running"], "{:#}", history.body);
    check("GET", runs, &history);
    check("GET", runs, &call(&api, "GET", "/v1/schedules/windowed/runs?limit=1", None).await);
    check("GET", runs, &call(&api, "GET", "/v1/schedules/windowed/runs?cursor=yesterday", None).await);
    check("GET", runs, &call(&api, "GET", "/v1/schedules/nope/runs", None).await);
    let deleted = call(&api, "DELETE", "/v1/schedules/windowed", None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    check("DELETE", schedule, &deleted);
    check("DELETE", schedule, &call(&api, "DELETE", "/v1/schedules/windowed", None).await);

    // Transport problems.
    let bad_json = api
        .send(
            Request::post("/v1/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{oops"))
                .unwrap(),
        )
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    check("POST", "/v1/jobs", &bad_json);
    let not_json = api
        .send(
            Request::put("/v1/pipelines/p")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    check("PUT", pipeline, &not_json);
    let too_large = call(
        &api,
        "POST",
        "/v1/executions",
        Some(json!({"pipeline": "x".repeat(BODY_LIMIT)})),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    check("POST", "/v1/executions", &too_large);
    let bad_path = call(&api, "GET", "/v1/jobs/%FF", None).await;
    assert_eq!(bad_path.status, StatusCode::BAD_REQUEST);
    check("GET", "/v1/jobs/{id}", &bad_path);

    // Redis gone.
    api.redis.kill();
    let not_ready = call(&api, "GET", "/readyz", None).await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    check("GET", "/readyz", &not_ready);
    let unavailable = call(&api, "GET", "/v1/pipelines", None).await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    check("GET", "/v1/pipelines", &unavailable);
    let no_stream = call(&api, "GET", "/v1/events", None).await;
    assert_eq!(no_stream.status, StatusCode::SERVICE_UNAVAILABLE);
    check("GET", "/v1/events", &no_stream);
}

#[tokio::test]
async fn the_checker_refuses_what_the_document_does_not_say() {
    let api = api().await;
    let checker = Checker::new(document(&api).await);
    call(&api, "PUT", "/v1/pipelines/release", Some(release())).await;
    let pipeline = call(&api, "GET", "/v1/pipelines/release", None).await;
    let enqueued = call(&api, "POST", "/v1/jobs", Some(json!({"kind": "noop"}))).await;
    let job_id = enqueued.body["job"]["id"].as_str().unwrap().to_string();
    api.run_job(&job_id).await;
    let job = call(&api, "GET", &format!("/v1/jobs/{job_id}"), None).await;
    let problem = call(&api, "GET", "/v1/jobs/nope", None).await;
    for (template, reply) in [
        ("/v1/pipelines/{id}", &pipeline),
        ("/v1/jobs/{id}", &job),
        ("/v1/jobs/{id}", &problem),
    ] {
        checker.check("GET", template, reply);
    }

    let changed = |reply: &Reply, change: &dyn Fn(&mut Reply)| {
        let mut reply = reply.clone();
        change(&mut reply);
        reply
    };
    let wrong: Vec<(&str, &str, Reply)> = vec![
        (
            "a member the schema does not list",
            "/v1/jobs/{id}",
            changed(&job, &|r| {
                r.body["lease"]["token"] = json!("secret");
            }),
        ),
        (
            "one inside a composition",
            "/v1/pipelines/{id}",
            changed(&pipeline, &|r| {
                r.body["pipeline"]["steps"][1]["colour"] = json!("blue");
            }),
        ),
        (
            "a value outside its enum",
            "/v1/jobs/{id}",
            changed(&job, &|r| {
                r.body["status"] = json!("sleeping");
            }),
        ),
        (
            "a missing member",
            "/v1/jobs/{id}",
            changed(&job, &|r| {
                r.body.as_object_mut().unwrap().remove("queue");
            }),
        ),
        (
            "an unknown code",
            "/v1/jobs/{id}",
            changed(&problem, &|r| {
                r.body["code"] = json!("TEAPOT");
            }),
        ),
        (
            "an undocumented status",
            "/v1/jobs/{id}",
            changed(&problem, &|r| {
                r.status = StatusCode::IM_A_TEAPOT;
            }),
        ),
        (
            "a wrong content type",
            "/v1/jobs/{id}",
            changed(&problem, &|r| {
                r.headers = HeaderMap::new();
                let json = HeaderValue::from_static("application/json");
                r.headers.insert(header::CONTENT_TYPE, json);
            }),
        ),
    ];
    for (what, template, reply) in wrong {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            checker.check("GET", template, &reply)
        }));
        assert!(outcome.is_err(), "{what} was accepted: {reply:?}");
    }
}
