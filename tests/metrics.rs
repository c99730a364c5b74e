//! The metrics endpoint of the real binary: `sluice worker --metrics-listen ADDR` and
//! `sluice scheduler --metrics-listen ADDR` serve their process's metrics at `/metrics` in
//! the Prometheus text format (parsed here with an independent parser), the worker's
//! counters move as it runs jobs, and an address that cannot be bound stops the start. The
//! same address answers the probes `/healthz` and `/readyz` from the start, before Redis is
//! first reached, readiness following whether Redis answers.

mod common;

use std::time::Duration;

use common::{Setup, expect_exit, http_client, start_executions, wait_all_terminal};
use sluice_testkit::metrics::Scrape;
use sluice_testkit::process::SIGTERM;
use sluice_testkit::{free_port, wait_until};

const QUICK: &str = r#"
id = "quick"
[[steps]]
name = "only"
kind = "noop"
"#;

/// `GET url`: status, content type and body, or `None` while nothing answers.
async fn get(url: &str) -> Option<(u16, String, String)> {
    let reply = http_client().get(url).send().await.ok()?;
    let status = reply.status().as_u16();
    let content_type = reply
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((status, content_type, reply.text().await.ok()?))
}

/// Scrapes `url`, waiting for the endpoint to answer, and parses the metrics.
async fn scrape(url: &str) -> Scrape {
    let (status, content_type, body) = wait_until(
        Duration::from_secs(20),
        "the metrics endpoint to answer",
        || get(url),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scrape::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_metrics_listen_serves_its_metrics_and_they_move_as_it_runs_jobs() {
    let setup = Setup::new("concurrency = 2");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = setup.spawn_with("worker", "worker", &["--metrics-listen", &addr], &[]);
    let url = format!("http://{addr}/metrics");

    let before = scrape(&url).await;
    assert_eq!(
        before.gauge(
            "sluice_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(before.counter("sluice_jobs_total", &[]), 0.0);

    let engine = setup.engine().await;
    let ids = start_executions(&engine, QUICK, 3).await;
    wait_all_terminal(&engine, &ids, Duration::from_secs(20)).await;
    let after = scrape(&url).await;
    let noop =
        |outcome: &'static str| [("queue", "default"), ("kind", "noop"), ("outcome", outcome)];
    assert_eq!(after.counter("sluice_jobs_total", &noop("started")), 3.0);
    assert_eq!(after.counter("sluice_jobs_total", &noop("completed")), 3.0);
    assert_eq!(
        after.histogram_count("sluice_job_duration_seconds", &[("kind", "noop")]),
        3.0
    );
    assert_eq!(
        after.histogram_count("sluice_job_queue_wait_seconds", &[("kind", "noop")]),
        3.0
    );
    assert!(
        after.histogram_count("sluice_redis_round_trip_seconds", &[])
            > before.histogram_count("sluice_redis_round_trip_seconds", &[])
    );

    // Only /metrics and the probes are served, and the cluster-wide figures are the API's.
    let (status, _, _) = get(&format!("http://{addr}/v1/queues"))
        .await
        .expect("the endpoint answers");
    assert_eq!(status, 404);
    let (_, _, text) = get(&url).await.expect("the endpoint answers");
    assert!(
        !text.contains("sluice_queue_jobs") && !text.contains("sluice_executions"),
        "{text}"
    );

    worker.signal(SIGTERM);
    let status = expect_exit(&mut worker, Duration::from_secs(15), "the worker").await;
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        setup.log_tail("worker", 20)
    );
    assert!(
        get(&url).await.is_none(),
        "the endpoint is closed once the process exits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_with_metrics_listen_serves_its_metrics() {
    let setup = Setup::new("");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut scheduler =
        setup.spawn_with("scheduler", "scheduler", &["--metrics-listen", &addr], &[]);
    let url = format!("http://{addr}/metrics");
    // Its ticks call Redis, and each call is timed.
    let scrape = wait_until(
        Duration::from_secs(20),
        "the scheduler's Redis calls to be timed",
        || async {
            let scrape = scrape(&url).await;
            (scrape.histogram_count("sluice_redis_round_trip_seconds", &[]) > 0.0).then_some(scrape)
        },
    )
    .await;
    assert_eq!(scrape.counter("sluice_lease_reclaims_total", &[]), 0.0);
    assert_eq!(
        scrape.counter("sluice_schedule_fires_total", &[("outcome", "fired")]),
        0.0
    );
    scheduler.signal(SIGTERM);
    let status = expect_exit(&mut scheduler, Duration::from_secs(15), "the scheduler").await;
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        setup.log_tail("scheduler", 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_that_cannot_be_bound_stops_the_start() {
    let setup = Setup::new("");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut worker = setup.spawn_env("worker", "worker", &[("SLUICE_METRICS__LISTEN", &addr)]);
    let status = expect_exit(&mut worker, Duration::from_secs(15), "the worker").await;
    assert_eq!(status.code(), Some(1));
    let log = setup.log_tail("worker", 5);
    assert!(
        log.contains(&format!("cannot listen on {addr} (metrics.listen)")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_before_redis_is_reached_and_readiness_follows_redis() {
    let mut setup = Setup::new("concurrency = 1\nidle_poll = \"200ms\"");
    setup.redis.kill();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = setup.spawn_with("worker", "worker", &["--metrics-listen", &addr], &[]);
    let api = format!("http://{addr}");
    let probe = |path: &'static str| {
        let url = format!("{api}{path}");
        async move { get(&url).await }
    };

    // Redis has never answered: alive, not ready, and `sluice health` says so.
    let (status, _, _) = wait_until(Duration::from_secs(20), "the probes to answer", || probe("/healthz")).await;
    assert_eq!(status, 200);
    let (status, content_type, body) = probe("/readyz").await.expect("/readyz answers");
    assert_eq!((status, content_type.as_str()), (503, "application/problem+json"), "{body}");
    assert!(body.contains("NOT_READY"), "{body}");
    let health = common::sluice(&["health", "--api", &api], &[]);
    assert_eq!(health.status.code(), Some(1), "{}", common::stderr(&health));
    assert!(common::stderr(&health).contains("NOT_READY"), "{}", common::stderr(&health));

    // Redis answers: ready.
    setup.redis.restart();
    wait_until(Duration::from_secs(20), "the worker to be ready", || async {
        probe("/readyz").await.filter(|(status, _, _)| *status == 200).map(|_| ())
    })
    .await;
    let health = common::sluice(&["health", "--api", &api], &[]);
    assert_eq!(health.status.code(), Some(0), "{}", common::stderr(&health));

    worker.signal(SIGTERM);
    let status = expect_exit(&mut worker, Duration::from_secs(15), "the worker").await;
    assert_eq!(status.code(), Some(0), "log:\n{}", setup.log_tail("worker", 20));
}
