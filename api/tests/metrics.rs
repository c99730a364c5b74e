//! `GET /metrics` while pipelines run: a real worker beside the API over the same store
//! (one process's metrics, as in `sluice up`), scrapes parsed with an independent
//! Prometheus text parser (testkit's strict reader over `prometheus-parse`), and the
//! counters, histograms and cluster-wide gauges checked to move with the work done.

mod common;

use axum::http::{Method, StatusCode, header};
use common::{Api, api, run, settled, worker};
use serde_json::{Value, json};
use sluice_testkit::metrics::Scrape;

/// Scrapes `/metrics` with no token (it is open) and parses it.
async fn scrape(api: &Api) -> Scrape {
    let reply = api.call(Method::GET, "/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(reply.body.as_str().expect("a text body"))
}

/// A noop step, a gate whose probe passes, and a command step.
fn release() -> Value {
    json!({"id": "release", "steps": [
        {"name": "prepare", "kind": "noop"},
        {"name": "ci", "kind": "gate", "probe": {"run": ["true"]}, "interval": "1s", "max_polls": 5},
        {"name": "build", "kind": "command", "run": ["true"]},
    ]})
}

/// A command that fails twice: retried once, then failed for good.
fn broken() -> Value {
    json!({"id": "broken", "steps": [
        {"name": "build", "kind": "command", "run": ["false"],
         "retry": {"max_attempts": 2, "backoff": "fixed", "initial": "100ms"}},
    ]})
}

fn jobs(kind: &str, outcome: &str) -> [(&'static str, String); 3] {
    [
        ("queue", "default".into()),
        ("kind", kind.into()),
        ("outcome", outcome.into()),
    ]
}

/// `labels` as the reader takes them.
fn pairs<'a>(labels: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_pipelines_run() {
    let api = api().await;
    let _worker = worker(&api);

    let idle = scrape(&api).await;
    assert_eq!(idle.counter("sluice_jobs_total", &[]), 0.0);
    assert_eq!(
        idle.gauge("sluice_executions", &[("status", "completed")]),
        0.0
    );

    // Work: a pipeline that completes, one that fails after a retry.
    let first = run(&api, release()).await;
    assert_eq!(settled(&api, &first).await["status"], "completed");
    let failing = run(&api, broken()).await;
    assert_eq!(settled(&api, &failing).await["status"], "failed");

    let one = scrape(&api).await;
    let counter = |s: &Scrape, kind: &str, outcome: &str| {
        s.counter("sluice_jobs_total", &pairs(&jobs(kind, outcome)))
    };
    for kind in ["noop", "gate", "command"] {
        assert_eq!(
            counter(&one, kind, "started"),
            if kind == "command" { 3.0 } else { 1.0 },
            "{kind}"
        );
        assert!(
            one.counter(
                "sluice_jobs_enqueued_total",
                &[("queue", "default"), ("kind", kind)]
            ) > 0.0,
            "{kind}"
        );
        assert!(
            one.histogram_count(
                "sluice_job_queue_wait_seconds",
                &[("queue", "default"), ("kind", kind)]
            ) > 0.0
        );
    }
    assert_eq!(counter(&one, "noop", "completed"), 1.0);
    assert_eq!(counter(&one, "gate", "completed"), 1.0);
    assert_eq!(counter(&one, "command", "completed"), 1.0);
    assert_eq!(counter(&one, "command", "retried"), 1.0);
    assert_eq!(counter(&one, "command", "failed"), 1.0);
    assert_eq!(
        one.histogram_count(
            "sluice_job_duration_seconds",
            &[("queue", "default"), ("kind", "command")]
        ),
        3.0
    );
    assert!(
        one.histogram_count(
            "sluice_job_duration_seconds",
            &[("queue", "default"), ("kind", "noop")]
        ) > 0.0
    );
    assert_eq!(
        one.counter("sluice_gate_polls_total", &[("verdict", "pass")]),
        1.0
    );
    assert_eq!(
        one.counter("sluice_gate_polls_total", &[("verdict", "error")]),
        0.0
    );
    assert!(one.histogram_count("sluice_redis_round_trip_seconds", &[]) > 0.0);
    // Cluster-wide figures, read from Redis.
    assert_eq!(
        one.gauge("sluice_executions", &[("status", "completed")]),
        1.0
    );
    assert_eq!(one.gauge("sluice_executions", &[("status", "failed")]), 1.0);
    assert_eq!(
        one.gauge("sluice_executions", &[("status", "running")]),
        0.0
    );
    assert_eq!(one.gauge("sluice_workers_live", &[]), 1.0);
    for state in ["ready", "delayed", "reserved", "running"] {
        assert_eq!(
            one.gauge(
                "sluice_queue_jobs",
                &[("queue", "default"), ("state", state)]
            ),
            0.0,
            "{state}"
        );
    }
    assert_eq!(
        one.gauge(
            "sluice_queue_oldest_ready_age_seconds",
            &[("queue", "default")]
        ),
        0.0
    );

    // A standalone job, delayed an hour: enqueued, waiting in the queue, then cancelled.
    let enqueued = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(json!({"queue": "later", "kind": "noop", "delay": "1h"})),
        )
        .await;
    assert_eq!(enqueued.status, StatusCode::CREATED, "{enqueued:?}");
    let waiting = scrape(&api).await;
    assert_eq!(
        waiting.counter(
            "sluice_jobs_enqueued_total",
            &[("queue", "later"), ("kind", "noop")]
        ),
        1.0
    );
    assert_eq!(
        waiting.gauge(
            "sluice_queue_jobs",
            &[("queue", "later"), ("state", "delayed")]
        ),
        1.0
    );
    let id = enqueued.body["job"]["id"].as_str().unwrap();
    let cancelled = api
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");

    // More work: every figure it touches grows.
    let second = run(&api, release()).await;
    assert_eq!(settled(&api, &second).await["status"], "completed");
    let two = scrape(&api).await;
    assert_eq!(
        two.counter(
            "sluice_jobs_total",
            &[("queue", "later"), ("outcome", "cancelled")]
        ),
        1.0
    );
    assert_eq!(
        two.gauge(
            "sluice_queue_jobs",
            &[("queue", "later"), ("state", "delayed")]
        ),
        0.0
    );
    for kind in ["noop", "gate", "command"] {
        assert!(
            counter(&two, kind, "completed") > counter(&one, kind, "completed"),
            "{kind}"
        );
        let enqueued = |s: &Scrape| {
            s.counter(
                "sluice_jobs_enqueued_total",
                &[("queue", "default"), ("kind", kind)],
            )
        };
        assert!(enqueued(&two) > enqueued(&one), "{kind}");
        let durations = |s: &Scrape| {
            s.histogram_count(
                "sluice_job_duration_seconds",
                &[("queue", "default"), ("kind", kind)],
            )
        };
        assert!(durations(&two) > durations(&one), "{kind}");
    }
    assert_eq!(
        two.counter("sluice_gate_polls_total", &[("verdict", "pass")]),
        2.0
    );
    assert_eq!(
        two.gauge("sluice_executions", &[("status", "completed")]),
        2.0
    );
    assert!(
        two.histogram_count("sluice_redis_round_trip_seconds", &[])
            > one.histogram_count("sluice_redis_round_trip_seconds", &[])
    );
}
