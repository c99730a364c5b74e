//! The sluice scenarios of `sluice bench` run end to end at a small size.

use sluice_bench::Options;
use sluice_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sluice_scenarios_run_and_report_every_figure() {
    let redis = RedisServer::start();
    let options = Options {
        jobs: 300,
        concurrencies: vec![1, 64],
        backlogs: vec![200],
        latency_samples: 10,
        pipelines: 40,
        apalis: false,
        redis_benchmark: false,
        ..Options::new(redis.url())
    };
    let report = sluice_bench::run(&options).await.expect("the bench runs");

    assert_eq!(report.enqueue_single.as_ref().map(|r| r.count), Some(300));
    assert_eq!(report.enqueue_bulk.as_ref().map(|r| r.count), Some(300));
    assert!(
        report.memory_per_pending_job_bytes.is_some_and(|m| m > 0.0),
        "{report:?}"
    );
    assert_eq!(
        report
            .drain
            .iter()
            .map(|d| d.concurrency)
            .collect::<Vec<_>>(),
        [1, 64]
    );
    for d in &report.drain {
        assert!(d.rate.per_second > 0.0 && !d.rate.capped, "{d:?}");
        assert!(
            d.redis.calls_per_item > 0.0 && d.redis.commands_per_item > 0.0,
            "{d:?}"
        );
    }
    let backlogs: Vec<(usize, usize)> = report
        .backlog_drain
        .iter()
        .map(|d| (d.backlog, d.rate.count))
        .collect();
    assert_eq!(backlogs, [(200, 200)], "{report:?}");
    for d in report.drain.iter().chain(&report.backlog_drain) {
        assert!(
            d.redis.redis_cpu_us_per_item >= 0.0 && d.redis.client_cpu_us_per_item >= 0.0,
            "{d:?}"
        );
    }
    let pickup = report.pickup.as_ref().expect("pickup latency");
    assert_eq!(pickup.samples, 10);
    assert!(
        pickup.p50_ms.is_some() && pickup.p99_ms >= pickup.p50_ms,
        "{pickup:?}"
    );
    let p = report.pipelines.as_ref().expect("pipelines");
    assert_eq!((p.steps.count, p.executions.count), (200, 40));
    assert!(p.redis_per_step.calls_per_item > 0.0, "{p:?}");
    assert!(report.apalis.is_empty() && report.redis_benchmark.is_empty());

    let table = report.table();
    assert!(table.contains("sluice drain, concurrency 64"), "{table}");
    serde_json::to_string(&report).expect("the report serialises");

    // Every scenario removed its keys.
    let mut conn = redis.conn();
    let keys: Vec<String> = sluice_testkit::redis::cmd("KEYS")
        .arg("*bench*")
        .query(&mut conn)
        .expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
}
