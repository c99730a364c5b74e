//! The Prometheus metrics of one sluice process.
//!
//! A [`Metrics`] holds one registry for the whole process: in `sluice up` the API, the
//! scheduler and the worker share it, because they share one store (the store carries the
//! handle, see `sluice_store::Store::metrics`). Each figure is recorded where it happens:
//! the worker records the jobs it starts and settles, the engine the leases it reclaims and
//! the results posted back, the store the jobs its commits create and the time of every
//! Redis call. `docs/METRICS.md` lists every metric.
//!
//! Two kinds of figures:
//! - **per process** (counters and histograms here): what this process did since it started;
//!   Prometheus sums them over the processes it scrapes;
//! - **cluster-wide** ([`Cluster`]): read from Redis when scraped (queue depths, executions
//!   by status, live workers). They are the same whichever process reads them, so only the
//!   API serves them; the caller reads them and hands them to [`Metrics::render`].
//!
//! The exposition is the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]): Prometheus reads
//! it, as does every agent and parser that reads Prometheus metrics; the protobuf format is
//! not served. Invariant: names and label values are stable strings (the label values of
//! `outcome`, `verdict` and `state` are the `as_str` of the enums below).

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use sluice_core::Millis;
use sluice_core::job::{Job, NewJob, Settlement};

/// The `Content-Type` of [`Metrics::render`]'s text: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the job duration buckets: from a no-op to a three-hour command.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 10800.0,
];

/// Upper bounds (seconds) of the queue wait buckets: from a job leased at once to an hour
/// behind.
const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Upper bounds (seconds) of the Redis round-trip buckets: 100 µs to the default 5 s
/// response timeout.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The time from `from` to `to` (zero when `to` is earlier).
pub fn elapsed(from: Millis, to: Millis) -> Duration {
    Duration::from_millis(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

/// What became of a job, as counted by `sluice_jobs_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// An attempt started.
    Started,
    /// The attempt succeeded; the job is completed.
    Completed,
    /// The attempt failed and the job failed for good.
    Failed,
    /// The attempt failed and the job was scheduled again.
    Retried,
    /// The job was cancelled: stopped by an operator while running, or cancelled while
    /// pending.
    Cancelled,
}

impl JobOutcome {
    /// Every outcome.
    pub const ALL: [JobOutcome; 5] = [
        JobOutcome::Started,
        JobOutcome::Completed,
        JobOutcome::Failed,
        JobOutcome::Retried,
        JobOutcome::Cancelled,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Started => "started",
            JobOutcome::Completed => "completed",
            JobOutcome::Failed => "failed",
            JobOutcome::Retried => "retried",
            JobOutcome::Cancelled => "cancelled",
        }
    }

    /// What a settled attempt counts as; `None` for an attempt still running (its result
    /// will be posted back, and counted then).
    pub fn of(settlement: &Settlement) -> Option<JobOutcome> {
        match settlement {
            Settlement::Completed { .. } => Some(JobOutcome::Completed),
            Settlement::Retry { .. } => Some(JobOutcome::Retried),
            Settlement::Failed { .. } => Some(JobOutcome::Failed),
            Settlement::Deferred { .. } => None,
        }
    }
}

/// What one evaluation of a gate's probe said, as counted by `sluice_gate_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePoll {
    /// The gate may open.
    Pass,
    /// Not yet.
    Pending,
    /// The awaited thing failed.
    Fail,
    /// The probe gave no verdict (could not run, timed out, answered something else).
    Error,
}

impl GatePoll {
    /// Every result.
    pub const ALL: [GatePoll; 4] = [
        GatePoll::Pass,
        GatePoll::Pending,
        GatePoll::Fail,
        GatePoll::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GatePoll::Pass => "pass",
            GatePoll::Pending => "pending",
            GatePoll::Fail => "fail",
            GatePoll::Error => "error",
        }
    }
}

/// What became of a schedule's fire, as counted by `sluice_schedule_fires_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleFire {
    /// An execution started.
    Fired,
    /// Skipped (the target had a live execution, with `overlap = "skip"`).
    Skipped,
    /// A late fire dropped (`catch_up = "none"`).
    Dropped,
    /// The execution could not start (its pipeline is gone).
    Failed,
}

impl ScheduleFire {
    /// Every outcome.
    pub const ALL: [ScheduleFire; 4] = [ScheduleFire::Fired, ScheduleFire::Skipped, ScheduleFire::Dropped, ScheduleFire::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleFire::Fired => "fired",
            ScheduleFire::Skipped => "skipped",
            ScheduleFire::Dropped => "dropped",
            ScheduleFire::Failed => "failed",
        }
    }
}

/// The figures of one queue, summed over shards and lanes, read when scraped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueFigures {
    /// The queue.
    pub queue: String,
    /// Pending jobs due now, waiting for a worker.
    pub ready: u64,
    /// Pending jobs due later (delays, retry backoffs, gate polls, timers).
    pub delayed: u64,
    /// Pending jobs in a worker's prefetch buffer.
    pub reserved: u64,
    /// Running jobs.
    pub running: u64,
    /// How long the oldest ready job has waited; zero when none is ready.
    pub oldest_ready_age: Duration,
    /// Whether leasing from the queue is paused.
    pub paused: bool,
}

/// The cluster-wide figures, read from Redis when the API is scraped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// Every known queue.
    pub queues: Vec<QueueFigures>,
    /// Executions by status (every status, with zeros).
    pub executions: Vec<(&'static str, u64)>,
    /// Workers heard from recently.
    pub workers_live: u64,
}

/// The metrics of one process. Share it (`Arc<Metrics>`) between the roles of a process;
/// recording is lock-free and cheap.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: IntCounterVec,
    enqueued: IntCounterVec,
    duration: HistogramVec,
    queue_wait: HistogramVec,
    gate_polls: IntCounterVec,
    lease_reclaims: IntCounter,
    redis_round_trip: Histogram,
    schedule_fires: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

/// Registers `collector` in `registry` and gives it back. Every name is fixed, so a clash is
/// a bug that any test constructing [`Metrics`] finds.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are fixed and distinct");
    collector
}

impl Metrics {
    /// Fresh metrics in a registry of their own, every counter with fixed label values at
    /// zero (so that rates exist before the first event).
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram_vec = |name: &str, help: &str, buckets: &[f64]| {
            registered(
                r,
                HistogramVec::new(histogram_opts(name, help, buckets), &["queue", "kind"])
                    .expect("valid metric"),
            )
        };
        let build = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "sluice_build_info",
                    "The running sluice version (always 1).",
                ),
                &["version"],
            )
            .expect("valid metric"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Self {
            jobs: counter_vec(
                "sluice_jobs_total",
                "Job attempts started, and what became of them, by this process.",
                &["queue", "kind", "outcome"],
            ),
            enqueued: counter_vec("sluice_jobs_enqueued_total", "Jobs created by this process.", &["queue", "kind"]),
            duration: histogram_vec("sluice_job_duration_seconds", "How long settled job attempts ran.", DURATION_BUCKETS),
            queue_wait: histogram_vec(
                "sluice_job_queue_wait_seconds",
                "How long jobs waited after they were due before an attempt started.",
                WAIT_BUCKETS,
            ),
            gate_polls: counter_vec("sluice_gate_polls_total", "Gate probe evaluations, by verdict.", &["verdict"]),
            lease_reclaims: registered(
                r,
                IntCounter::with_opts(Opts::new(
                    "sluice_lease_reclaims_total",
                    "Expired leases reclaimed: reservations returned to their queues and running attempts failed.",
                ))
                .expect("valid metric"),
            ),
            redis_round_trip: registered(
                r,
                Histogram::with_opts(histogram_opts(
                    "sluice_redis_round_trip_seconds",
                    "Time of each call of this process's store to Redis (a command, a pipeline or a script).",
                    ROUND_TRIP_BUCKETS,
                ))
                .expect("valid metric"),
            ),
            schedule_fires: counter_vec("sluice_schedule_fires_total", "Schedule fires, by outcome.", &["outcome"]),
            registry,
        };
        for poll in GatePoll::ALL {
            metrics.gate_polls.with_label_values(&[poll.as_str()]);
        }
        for fire in ScheduleFire::ALL {
            metrics.schedule_fires.with_label_values(&[fire.as_str()]);
        }
        metrics
    }

    fn count(&self, queue: &str, kind: &str, outcome: JobOutcome) {
        self.jobs
            .with_label_values(&[queue, kind, outcome.as_str()])
            .inc();
    }

    /// An attempt of `job` started at `now`: counts it, and how long the job waited since
    /// it was due (`now - scheduled_at`).
    pub fn job_started(&self, job: &Job, now: Millis) {
        self.count(&job.queue, &job.kind, JobOutcome::Started);
        let waited = elapsed(job.scheduled_at, now);
        self.queue_wait
            .with_label_values(&[&job.queue, &job.kind])
            .observe(waited.as_secs_f64());
    }

    /// An attempt of `job` that ran for `ran` was settled with `settlement`. An attempt
    /// still running (a deferred result) is not counted yet.
    pub fn attempt_settled(&self, job: &Job, settlement: &Settlement, ran: Duration) {
        if let Some(outcome) = JobOutcome::of(settlement) {
            self.attempt_ended(job, outcome, ran);
        }
    }

    /// An attempt of `job` that ran for `ran` ended with `outcome`.
    pub fn attempt_ended(&self, job: &Job, outcome: JobOutcome, ran: Duration) {
        self.count(&job.queue, &job.kind, outcome);
        self.duration
            .with_label_values(&[&job.queue, &job.kind])
            .observe(ran.as_secs_f64());
    }

    /// The pending `job` was cancelled (it never ran, so no duration).
    pub fn pending_job_cancelled(&self, job: &Job) {
        self.count(&job.queue, &job.kind, JobOutcome::Cancelled);
    }

    /// A job of `queue` and `kind` was created.
    pub fn job_enqueued(&self, queue: &str, kind: &str) {
        self.enqueued.with_label_values(&[queue, kind]).inc();
    }

    /// The jobs of a committed plan were created.
    pub fn jobs_enqueued(&self, jobs: &[NewJob]) {
        for job in jobs {
            self.job_enqueued(&job.queue, &job.kind);
        }
    }

    /// A gate's probe was evaluated.
    pub fn gate_polled(&self, poll: GatePoll) {
        self.gate_polls.with_label_values(&[poll.as_str()]).inc();
    }

    /// `n` expired leases were reclaimed.
    pub fn leases_reclaimed(&self, n: usize) {
        self.lease_reclaims
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// One call to Redis took `took`.
    pub fn redis_round_trip(&self, took: Duration) {
        self.redis_round_trip.observe(took.as_secs_f64());
    }

    /// A schedule fired (or its fire was skipped). For the scheduler: call it once per
    /// fire it decided, with what became of it.
    pub fn schedule_fired(&self, outcome: ScheduleFire) {
        self.schedule_fires
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// The exposition ([`CONTENT_TYPE`]): this process's metrics and, when given, the
    /// cluster-wide figures.
    pub fn render(&self, cluster: Option<&Cluster>) -> String {
        let mut families = self.registry.gather();
        if let Some(cluster) = cluster {
            families.extend(cluster_families(cluster));
            families.sort_by(|a, b| a.name().cmp(b.name()));
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .expect("metric families encode as text");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The cluster-wide figures as metric families (a registry made for one scrape).
fn cluster_families(cluster: &Cluster) -> Vec<prometheus::proto::MetricFamily> {
    let registry = Registry::new();
    let r = &registry;
    let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
        registered(
            r,
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
        )
    };
    let depth = gauge_vec(
        "sluice_queue_jobs",
        "Jobs of each queue by state, in the whole deployment.",
        &["queue", "state"],
    );
    let oldest = registered(
        r,
        prometheus::GaugeVec::new(
            Opts::new(
                "sluice_queue_oldest_ready_age_seconds",
                "How long the oldest ready job of each queue has waited (0: none ready).",
            ),
            &["queue"],
        )
        .expect("valid metric"),
    );
    let paused = gauge_vec(
        "sluice_queue_paused",
        "Whether leasing from each queue is paused (1) or not (0).",
        &["queue"],
    );
    let executions = gauge_vec(
        "sluice_executions",
        "Executions by status, in the whole deployment.",
        &["status"],
    );
    let workers = registered(
        r,
        IntGauge::with_opts(Opts::new(
            "sluice_workers_live",
            "Worker processes heard from recently, in the whole deployment.",
        ))
        .expect("valid metric"),
    );
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for q in &cluster.queues {
        for (state, n) in [
            ("ready", q.ready),
            ("delayed", q.delayed),
            ("reserved", q.reserved),
            ("running", q.running),
        ] {
            depth
                .with_label_values(&[q.queue.as_str(), state])
                .set(int(n));
        }
        oldest
            .with_label_values(&[q.queue.as_str()])
            .set(q.oldest_ready_age.as_secs_f64());
        paused
            .with_label_values(&[q.queue.as_str()])
            .set(i64::from(q.paused));
    }
    for (status, n) in &cluster.executions {
        executions.with_label_values(&[*status]).set(int(*n));
    }
    workers.set(int(cluster.workers_live));
    registry.gather()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_core::job::JobError;
    use sluice_testkit::metrics::Scrape;

    use super::*;

    /// A job of queue `deploy` and kind `command`, due at 1 000 ms.
    fn job() -> Job {
        serde_json::from_value(json!({
            "id": "job_0_x", "queue": "deploy", "kind": "command", "payload": {},
            "status": "running", "priority": 0, "attempts": 1,
            "retry": sluice_core::RetryPolicy::default(),
            "scheduled_at": 1_000, "created_at": 0, "updated_at": 0,
        }))
        .unwrap()
    }

    const JOB: [(&str, &str); 2] = [("queue", "deploy"), ("kind", "command")];

    fn jobs(outcome: &str) -> [(&'static str, &str); 3] {
        [JOB[0], JOB[1], ("outcome", outcome)]
    }

    #[test]
    fn fresh_metrics_show_the_fixed_series_at_zero() {
        let scrape = Scrape::parse(&Metrics::new().render(None));
        for poll in GatePoll::ALL {
            assert_eq!(
                scrape.counter("sluice_gate_polls_total", &[("verdict", poll.as_str())]),
                0.0
            );
        }
        for fire in ScheduleFire::ALL {
            assert_eq!(
                scrape.counter("sluice_schedule_fires_total", &[("outcome", fire.as_str())]),
                0.0
            );
        }
        assert_eq!(scrape.counter("sluice_lease_reclaims_total", &[]), 0.0);
        assert_eq!(
            scrape.gauge(
                "sluice_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        assert_eq!(
            scrape.histogram_count("sluice_redis_round_trip_seconds", &[]),
            0.0
        );
    }

    #[test]
    fn an_attempt_counts_its_start_its_wait_its_outcome_and_its_duration() {
        let metrics = Metrics::new();
        let job = job();
        metrics.job_started(&job, 3_500);
        let retry = Settlement::Retry {
            error: JobError::retryable("boom"),
            at: 9_000,
            delay_ms: 5_500,
        };
        metrics.attempt_settled(&job, &retry, Duration::from_millis(250));
        // The retry is due at 9 000 and starts then.
        metrics.job_started(
            &Job {
                scheduled_at: 9_000,
                ..job.clone()
            },
            9_000,
        );
        metrics.attempt_settled(
            &job,
            &Settlement::Deferred { deadline: 20_000 },
            Duration::from_secs(1),
        );
        metrics.attempt_settled(
            &job,
            &Settlement::Completed {
                output: json!(null),
            },
            Duration::from_secs(2),
        );
        metrics.attempt_ended(&job, JobOutcome::Cancelled, Duration::from_secs(3));
        metrics.pending_job_cancelled(&job);

        let text = metrics.render(None);
        let scrape = Scrape::parse(&text);
        assert_eq!(scrape.counter("sluice_jobs_total", &jobs("started")), 2.0);
        assert_eq!(scrape.counter("sluice_jobs_total", &jobs("retried")), 1.0);
        assert_eq!(scrape.counter("sluice_jobs_total", &jobs("completed")), 1.0);
        assert_eq!(scrape.counter("sluice_jobs_total", &jobs("cancelled")), 2.0);
        assert_eq!(scrape.counter("sluice_jobs_total", &jobs("failed")), 0.0);
        // The deferred settlement counted nothing; the pending cancel has no duration.
        assert_eq!(
            scrape.histogram_count("sluice_job_duration_seconds", &JOB),
            3.0
        );
        assert_eq!(
            scrape.histogram_sum("sluice_job_duration_seconds", &JOB),
            5.25
        );
        // Waits: 2.5 s after it was due, then 0 s.
        assert_eq!(
            scrape.histogram_count("sluice_job_queue_wait_seconds", &JOB),
            2.0
        );
        assert_eq!(
            scrape.histogram_sum("sluice_job_queue_wait_seconds", &JOB),
            2.5
        );
        assert!(text.contains("sluice_job_queue_wait_seconds_bucket{kind=\"command\",queue=\"deploy\",le=\"0.005\"} 1\n"), "{text}");
    }

    #[test]
    fn a_job_started_before_it_was_due_waited_zero() {
        let metrics = Metrics::new();
        metrics.job_started(&job(), 400);
        let scrape = Scrape::parse(&metrics.render(None));
        assert_eq!(
            scrape.histogram_count("sluice_job_queue_wait_seconds", &JOB),
            1.0
        );
        assert_eq!(
            scrape.histogram_sum("sluice_job_queue_wait_seconds", &JOB),
            0.0
        );
    }

    #[test]
    fn enqueues_polls_reclaims_round_trips_and_fires_are_counted() {
        let metrics = Metrics::new();
        let new_job = |queue: &str, kind: &str| -> NewJob {
            serde_json::from_value(json!({
                "id": "job_0_y", "queue": queue, "kind": kind, "payload": {}, "priority": 0,
                "retry": sluice_core::RetryPolicy::default(),
            }))
            .unwrap()
        };
        metrics.jobs_enqueued(&[
            new_job("deploy", "command"),
            new_job("deploy", "gate"),
            new_job("deploy", "command"),
        ]);
        metrics.job_enqueued("default", "noop");
        metrics.gate_polled(GatePoll::Pending);
        metrics.gate_polled(GatePoll::Pending);
        metrics.gate_polled(GatePoll::Error);
        metrics.leases_reclaimed(3);
        metrics.redis_round_trip(Duration::from_micros(300));
        metrics.schedule_fired(ScheduleFire::Skipped);

        let scrape = Scrape::parse(&metrics.render(None));
        assert_eq!(scrape.counter("sluice_jobs_enqueued_total", &JOB), 2.0);
        assert_eq!(
            scrape.counter("sluice_jobs_enqueued_total", &[("queue", "deploy")]),
            3.0
        );
        assert_eq!(
            scrape.counter("sluice_jobs_enqueued_total", &[("kind", "noop")]),
            1.0
        );
        assert_eq!(
            scrape.counter("sluice_gate_polls_total", &[("verdict", "pending")]),
            2.0
        );
        assert_eq!(
            scrape.counter("sluice_gate_polls_total", &[("verdict", "error")]),
            1.0
        );
        assert_eq!(
            scrape.counter("sluice_gate_polls_total", &[("verdict", "pass")]),
            0.0
        );
        assert_eq!(scrape.counter("sluice_lease_reclaims_total", &[]), 3.0);
        assert_eq!(
            scrape.histogram_count("sluice_redis_round_trip_seconds", &[]),
            1.0
        );
        assert_eq!(
            scrape.counter("sluice_schedule_fires_total", &[("outcome", "skipped")]),
            1.0
        );
        assert_eq!(
            scrape.counter("sluice_schedule_fires_total", &[("outcome", "fired")]),
            0.0
        );
    }

    #[test]
    fn cluster_figures_are_served_only_when_given() {
        let metrics = Metrics::new();
        let alone = metrics.render(None);
        for name in ["sluice_queue_", "sluice_executions", "sluice_workers_live"] {
            assert!(!alone.contains(name), "{name} in:\n{alone}");
        }
        let cluster = Cluster {
            queues: vec![
                QueueFigures {
                    queue: "deploy".into(),
                    ready: 4,
                    delayed: 2,
                    reserved: 1,
                    running: 3,
                    oldest_ready_age: Duration::from_millis(1_500),
                    paused: true,
                },
                QueueFigures {
                    queue: "default".into(),
                    ..QueueFigures::default()
                },
            ],
            executions: vec![("running", 2), ("completed", 7)],
            workers_live: 2,
        };
        let scrape = Scrape::parse(&metrics.render(Some(&cluster)));
        for (state, n) in [
            ("ready", 4.0),
            ("delayed", 2.0),
            ("reserved", 1.0),
            ("running", 3.0),
        ] {
            assert_eq!(
                scrape.gauge(
                    "sluice_queue_jobs",
                    &[("queue", "deploy"), ("state", state)]
                ),
                n
            );
            assert_eq!(
                scrape.gauge(
                    "sluice_queue_jobs",
                    &[("queue", "default"), ("state", state)]
                ),
                0.0
            );
        }
        assert_eq!(
            scrape.gauge(
                "sluice_queue_oldest_ready_age_seconds",
                &[("queue", "deploy")]
            ),
            1.5
        );
        assert_eq!(
            scrape.gauge(
                "sluice_queue_oldest_ready_age_seconds",
                &[("queue", "default")]
            ),
            0.0
        );
        assert_eq!(
            scrape.gauge("sluice_queue_paused", &[("queue", "deploy")]),
            1.0
        );
        assert_eq!(
            scrape.gauge("sluice_queue_paused", &[("queue", "default")]),
            0.0
        );
        assert_eq!(
            scrape.gauge("sluice_executions", &[("status", "running")]),
            2.0
        );
        assert_eq!(
            scrape.gauge("sluice_executions", &[("status", "completed")]),
            7.0
        );
        assert_eq!(scrape.gauge("sluice_workers_live", &[]), 2.0);
        // The process's own metrics are still there.
        assert_eq!(scrape.gauge("sluice_build_info", &[]), 1.0);
    }

    #[test]
    fn the_strict_reader_refuses_what_is_not_prometheus_text() {
        let refused = std::panic::catch_unwind(|| {
            Scrape::parse("# TYPE a counter\na 1\n{\"not\": \"metrics\"}\n")
        });
        assert!(refused.is_err());
        let refused = std::panic::catch_unwind(|| Scrape::parse("# TYPE a counter\na one\n"));
        assert!(refused.is_err());
    }
}
