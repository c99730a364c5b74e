//! Redis outages against the real binary: two `sluice worker`s, a `sluice scheduler` and a
//! `sluice api`, with executions and standalone jobs in flight, lose Redis (kept with an
//! append-only file) and get it back.
//!
//! - **Stopped for 30 s** (the process gone, connections refused): every process keeps
//!   running; the API's `/readyz` answers 503 while its `/healthz` answers 200; the worker's
//!   and the scheduler's `/readyz` (their `--metrics-listen` endpoint) answer 503; they log the
//!   outage a bounded number of times and reconnect with backoff (few connection attempts);
//!   submissions during the outage are refused with 503 and retried afterwards. Once Redis is
//!   back every process is ready again without a restart, and every execution and job, from
//!   before and during the outage, completes exactly once, without an attempt lost.
//! - **Hung by SIGSTOP for 12 s** (connections open, nothing answers): the same, where a
//!   start request the API gave up on is still carried out by Redis once it resumes, so its
//!   retry with the same idempotency key finds that execution instead of making another.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    RawEvent, Setup, events, executions, http_client, job_status, start_executions,
    wait_all_terminal,
};
use serde_json::{Value, json};
use sluice_core::ExecutionStatus;
use sluice_testkit::process::{Child, SIGCONT, SIGSTOP, signal};
use sluice_testkit::{free_port, wait_until};

/// Two command steps of 0.6 s each, one attempt each: an attempt lost to the outage fails
/// the execution.
const PIPELINE: &str = r#"
id = "outage"
[[steps]]
name = "one"
kind = "command"
run = ["sh", "-c", "sleep 0.6; printf '{\"v\":1}' > \"$SLUICE_OUTPUT\""]
retry = { max_attempts = 1 }

[[steps]]
name = "two"
kind = "command"
run = ["sh", "-c", "sleep 0.6; printf '{\"v\":%s}' $(( $1 + 1 )) > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.one.output.v }}"]
retry = { max_attempts = 1 }
"#;

/// Executions started before the outage.
const EXECUTIONS_BEFORE: usize = 16;
/// Standalone jobs enqueued before the outage.
const JOBS_BEFORE: usize = 8;
/// Executions and jobs submitted while Redis is away.
const SUBMITTED_DURING: usize = 4;

/// Every process of the deployment, with the addresses of its probes.
struct Deployment {
    api: Child,
    api_url: String,
    scheduler: Child,
    workers: Vec<Child>,
    /// `(name, metrics address)` of the scheduler and each worker.
    endpoints: Vec<(String, String)>,
}

impl Deployment {
    fn start(setup: &Setup) -> Deployment {
        let api_port = free_port();
        setup.append(&format!(
            "[api]\nlisten = \"127.0.0.1:{api_port}\"\n\n[auth]\ndisabled = true\n"
        ));
        let mut endpoints = Vec::new();
        let mut spawn = |role: &str, name: &str| {
            let addr = format!("127.0.0.1:{}", free_port());
            let child = setup.spawn_with(role, name, &["--metrics-listen", &addr], &[]);
            endpoints.push((name.to_string(), addr));
            child
        };
        let scheduler = spawn("scheduler", "scheduler");
        let workers = vec![spawn("worker", "worker-0"), spawn("worker", "worker-1")];
        let api = setup.spawn("api", "api");
        Deployment {
            api,
            api_url: format!("http://127.0.0.1:{api_port}"),
            scheduler,
            workers,
            endpoints,
        }
    }

    /// Panics unless every process is still running.
    fn assert_all_running(&mut self, setup: &Setup, when: &str) {
        let mut all: Vec<(&str, &mut Child)> =
            vec![("api", &mut self.api), ("scheduler", &mut self.scheduler)];
        for (i, w) in self.workers.iter_mut().enumerate() {
            all.push((if i == 0 { "worker-0" } else { "worker-1" }, w));
        }
        for (name, child) in all {
            assert!(
                child.is_running(),
                "{name} exited {when}:\n{}",
                setup.log_tail(name, 30)
            );
        }
    }

    /// The status of every process's probe at `path` (`/readyz` or `/healthz`):
    /// `(name, HTTP status)`, 0 when no answer.
    async fn probe(&self, path: &str) -> Vec<(String, u16)> {
        let mut out = vec![(
            "api".to_string(),
            status_of(&format!("{}{path}", self.api_url)).await,
        )];
        for (name, addr) in &self.endpoints {
            out.push((
                name.clone(),
                status_of(&format!("http://{addr}{path}")).await,
            ));
        }
        out
    }

    /// The readiness of every process, as [`Deployment::probe`].
    async fn readiness(&self) -> Vec<(String, u16)> {
        self.probe("/readyz").await
    }

    /// The liveness of every process, as [`Deployment::probe`].
    async fn liveness(&self) -> Vec<(String, u16)> {
        self.probe("/healthz").await
    }

    /// Waits until every process answers its readiness probe with `status`.
    async fn wait_readiness(&self, status: u16, deadline: Duration, what: &str) {
        wait_until(deadline, what, || async {
            self.readiness()
                .await
                .iter()
                .all(|(_, s)| *s == status)
                .then_some(())
        })
        .await;
    }

    fn names() -> [&'static str; 4] {
        ["api", "scheduler", "worker-0", "worker-1"]
    }
}

/// The status of `GET url`, or 0 when nothing answers within 5 s.
async fn status_of(url: &str) -> u16 {
    let reply = http_client()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    reply.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// `POST url` with `body`: the status and the JSON answer (0 and null when nothing answers
/// within 10 s).
async fn post(url: &str, body: &Value) -> (u16, Value) {
    match http_client()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// The start request of the `i`-th execution submitted over the API.
fn start_body(key: &str, i: usize) -> Value {
    json!({ "pipeline": "outage", "input": { "n": 1000 + i }, "idempotency_key": key })
}

/// The enqueue request of a standalone command job.
fn job_body(key: &str) -> Value {
    json!({
        "queue": "default", "kind": "command", "max_attempts": 1, "dedupe_key": key,
        "payload": { "run": ["sh", "-c", "sleep 0.6"] },
    })
}

/// Posts `body` until the API accepts it (2xx), at most `deadline`; returns the answer.
async fn post_until_accepted(url: &str, body: &Value, deadline: Duration) -> Value {
    wait_until(deadline, "the API to accept a submission", || async {
        let (status, answer) = post(url, body).await;
        (200..300).contains(&status).then_some(answer)
    })
    .await
}

/// How many lines each process has logged so far.
fn log_lines(setup: &Setup) -> HashMap<&'static str, usize> {
    Deployment::names()
        .into_iter()
        .map(|name| {
            (
                name,
                std::fs::read_to_string(setup.log(name))
                    .unwrap_or_default()
                    .lines()
                    .count(),
            )
        })
        .collect()
}

/// Enqueues `n` standalone jobs over the API; returns their ids.
async fn enqueue_jobs(api: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = post_until_accepted(
            &format!("{api}/v1/jobs"),
            &job_body(&format!("{prefix}-{i}")),
            Duration::from_secs(10),
        )
        .await;
        ids.push(
            answer["job"]["id"]
                .as_str()
                .expect("the job's id")
                .to_string(),
        );
    }
    ids
}

/// Counts per key of the events of `kind`, the key read from the event's data by `key`.
fn count_by(
    stream: &[RawEvent],
    kind: &str,
    key: impl Fn(&Value) -> String,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in stream.iter().filter(|e| e.kind == kind) {
        *out.entry(key(&e.data)).or_insert(0) += 1;
    }
    out
}

/// Checks that every execution of `ids` completed with both steps, each step started and
/// completed once, and that each job of `jobs` started and completed once.
async fn assert_exactly_once(setup: &Setup, exec_ids: &[String], job_ids: &[String]) {
    let engine = setup.engine().await;
    wait_all_terminal(&engine, exec_ids, Duration::from_secs(60)).await;
    let all = executions(&engine, exec_ids).await;
    for e in &all {
        assert_eq!(
            e.status,
            ExecutionStatus::Completed,
            "execution {} did not complete: {:?}\nscheduler log:\n{}\nworker-0 log:\n{}",
            e.id,
            e.failure,
            setup.log_tail("scheduler", 15),
            setup.log_tail("worker-0", 15)
        );
        assert_eq!(e.steps[1].output, Some(json!({ "v": 2 })), "{}", e.id);
    }
    let mut conn = setup.raw();
    wait_until(
        Duration::from_secs(30),
        "every standalone job to complete",
        || async {
            job_ids
                .iter()
                .all(|id| job_status(&mut setup.raw(), id).as_deref() == Some("completed"))
                .then_some(())
        },
    )
    .await;
    let stream = events(&mut conn);
    let step_key =
        |d: &Value| format!("{}/{}", d["execution_id"].as_str().unwrap_or(""), d["step"]);
    let wanted: HashSet<String> = exec_ids
        .iter()
        .flat_map(|id| (0..2).map(move |s| format!("{id}/{s}")))
        .collect();
    for kind in ["execution.step.started", "execution.step.completed"] {
        let counts = count_by(&stream, kind, step_key);
        let mine: HashMap<&String, &usize> =
            counts.iter().filter(|(k, _)| wanted.contains(*k)).collect();
        assert_eq!(mine.len(), wanted.len(), "steps without a `{kind}` event");
        let twice: Vec<_> = mine.iter().filter(|(_, n)| ***n != 1).collect();
        assert!(
            twice.is_empty(),
            "steps with more than one `{kind}` event: {twice:?}"
        );
    }
    let job_key = |d: &Value| d["job_id"].as_str().unwrap_or("").to_string();
    for kind in ["job.started", "job.completed"] {
        let counts = count_by(&stream, kind, job_key);
        for id in job_ids {
            assert_eq!(counts.get(id), Some(&1), "job {id}: `{kind}` events");
        }
    }
    let failed = stream.iter().filter(|e| e.kind == "job.failed").count();
    assert_eq!(failed, 0, "attempts failed (an outage must cost none)");
    assert_eq!(common::leased_count(&mut conn), 0, "jobs left leased");
}

/// Counts the connections made to `port` while Redis is away: a listener that accepts and
/// closes each one at once (an unreachable Redis to every client), until dropped.
struct ConnectionCounter {
    count: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionCounter {
    fn listen(port: u16) -> ConnectionCounter {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).expect("bind Redis's port while it is stopped");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ConnectionCounter {
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops listening (the port is free again); returns the connections counted.
    fn close(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the counting thread");
        }
        self.count.load(Ordering::SeqCst)
    }
}

/// A deployment on a Redis with AOF, every process ready, with executions and standalone
/// jobs under way (some running, some reserved, some queued): the setup, the deployment, and
/// the ids of the executions and of the jobs.
async fn at_work() -> (Setup, Deployment, Vec<String>, Vec<String>) {
    let setup = Setup::single_with_aof(
        "concurrency = 4\nlease_ttl = \"5s\"\nidle_poll = \"1s\"\nshutdown_timeout = \"5s\"",
    );
    let d = Deployment::start(&setup);
    d.wait_readiness(200, Duration::from_secs(30), "every process to be ready")
        .await;
    let engine = setup.engine().await;
    let exec_ids = start_executions(&engine, PIPELINE, EXECUTIONS_BEFORE).await;
    let job_ids = enqueue_jobs(&d.api_url, "before", JOBS_BEFORE).await;
    wait_until(Duration::from_secs(20), "jobs to be running", || async {
        (common::leased_count(&mut setup.raw()) >= 4).then_some(())
    })
    .await;
    (setup, d, exec_ids, job_ids)
}

/// Submits the starts of `keys` (`(key, input index)`) until the API accepts each; returns
/// the executions' ids.
async fn resubmit_starts(api: &str, keys: &[(String, usize)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (key, i) in keys {
        let url = format!("{api}/v1/executions");
        let answer = post_until_accepted(&url, &start_body(key, *i), Duration::from_secs(10)).await;
        ids.push(
            answer["id"]
                .as_str()
                .expect("the execution's id")
                .to_string(),
        );
    }
    ids
}

/// Panics unless the stream holds `n` `execution.started` events.
fn assert_started(setup: &Setup, n: usize, what: &str) {
    let stream = events(&mut setup.raw());
    let started = stream
        .iter()
        .filter(|e| e.kind == "execution.started")
        .count();
    assert_eq!(started, n, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_30_seconds_every_process_survives_and_nothing_is_lost_or_doubled() {
    let (mut setup, mut d, mut exec_ids, mut job_ids) = at_work().await;

    setup.redis.stop();
    let outage = Instant::now();
    let lines_before = log_lines(&setup);

    // Submissions during the outage are refused, never half-accepted.
    for i in 0..SUBMITTED_DURING {
        let posted = Instant::now();
        let (status, answer) = post(
            &format!("{}/v1/executions", d.api_url),
            &start_body(&format!("during-{i}"), i),
        )
        .await;
        assert_eq!(status, 503, "a start while Redis is stopped: {answer}");
        // Refused at once, not held through a series of reconnection attempts.
        assert!(
            posted.elapsed() < Duration::from_secs(5),
            "a start took {:?} to be refused",
            posted.elapsed()
        );
        let (status, answer) = post(
            &format!("{}/v1/jobs", d.api_url),
            &job_body(&format!("during-{i}")),
        )
        .await;
        assert_eq!(status, 503, "an enqueue while Redis is stopped: {answer}");
        assert_eq!(answer["code"], "STORE_UNAVAILABLE", "{answer}");
    }

    // Every process reports not ready within a few seconds, stays alive and stays not ready.
    d.wait_readiness(
        503,
        Duration::from_secs(15),
        "every process to report not ready",
    )
    .await;
    eprintln!(
        "every process not ready {} ms into the outage",
        outage.elapsed().as_millis()
    );
    let mut counter = None;
    while outage.elapsed() < Duration::from_secs(30) {
        d.assert_all_running(&setup, "during the outage");
        let ready = d.readiness().await;
        assert!(
            ready.iter().all(|(_, s)| *s == 503),
            "readiness during the outage: {ready:?}"
        );
        let live = d.liveness().await;
        assert!(
            live.iter().all(|(_, s)| *s == 200),
            "liveness during the outage: {live:?}"
        );
        if counter.is_none() && outage.elapsed() >= Duration::from_secs(20) {
            counter = Some((
                ConnectionCounter::listen(setup.server().port()),
                Instant::now(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (counter, since) = counter.expect("the counting window began");
    let window = since.elapsed();
    let connections = counter.close();

    // Bounded noise: a few lines per process, not a line per retry.
    let lines_after = log_lines(&setup);
    for name in Deployment::names() {
        let logged = lines_after[name] - lines_before[name];
        eprintln!("outage test: {name} logged {logged} lines during the outage");
        assert!(
            logged <= 60,
            "{name} logged {logged} lines during a 30 s outage (a retry loop without backoff?):\n{}",
            setup.log_tail(name, 40)
        );
    }
    // Reconnects with backoff: four processes (and this test's probes, two a second) made
    // a few connections a second at most, not a tight loop.
    let per_second = connections as f64 / window.as_secs_f64();
    assert!(
        per_second < 40.0,
        "{connections} connections in {window:?} while Redis was away: no backoff"
    );

    setup.redis.restart();
    d.wait_readiness(
        200,
        Duration::from_secs(20),
        "every process to be ready again",
    )
    .await;
    d.assert_all_running(&setup, "after the outage");
    // What was refused during the outage is submitted again, and goes through once.
    let keys: Vec<(String, usize)> = (0..SUBMITTED_DURING)
        .map(|i| (format!("during-{i}"), i))
        .collect();
    exec_ids.extend(resubmit_starts(&d.api_url, &keys).await);
    job_ids.extend(enqueue_jobs(&d.api_url, "during", SUBMITTED_DURING).await);
    assert_exactly_once(&setup, &exec_ids, &job_ids).await;
    assert_started(
        &setup,
        EXECUTIONS_BEFORE + SUBMITTED_DURING,
        "executions started",
    );
    eprintln!(
        "outage test: {} executions and {} jobs completed once; {connections} connections in {:.1} s of the outage",
        exec_ids.len(),
        job_ids.len(),
        window.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung_by_sigstop_every_process_survives_and_a_retried_start_is_not_doubled() {
    let (setup, mut d, mut exec_ids, job_ids) = at_work().await;

    let redis_pid = setup.server().pid();
    signal(redis_pid, SIGSTOP);
    let hang = Instant::now();
    // Whatever reaches the silent Redis is carried out when it resumes: a start the API
    // gives up on (503 or no answer) may still happen, so it is retried with its key.
    let starts: Vec<(String, u16)> = futures_join(
        (0..SUBMITTED_DURING).map(|i| format!("hung-{i}")).collect(),
        &d.api_url,
    )
    .await;
    for (key, status) in &starts {
        assert!(
            matches!(status, 503 | 0),
            "start {key} while Redis is hung answered {status}"
        );
    }
    d.wait_readiness(
        503,
        Duration::from_secs(20),
        "every process to report not ready",
    )
    .await;
    while hang.elapsed() < Duration::from_secs(12) {
        d.assert_all_running(&setup, "while Redis is hung");
        let live = d.liveness().await;
        assert!(
            live.iter().all(|(_, s)| *s == 200),
            "liveness while Redis is hung: {live:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    signal(redis_pid, SIGCONT);
    d.wait_readiness(
        200,
        Duration::from_secs(30),
        "every process to be ready again",
    )
    .await;
    d.assert_all_running(&setup, "after the hang");

    let keys: Vec<(String, usize)> = starts
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (key.clone(), i))
        .collect();
    exec_ids.extend(resubmit_starts(&d.api_url, &keys).await);
    assert_exactly_once(&setup, &exec_ids, &job_ids).await;
    assert_started(
        &setup,
        EXECUTIONS_BEFORE + SUBMITTED_DURING,
        "one execution per idempotency key",
    );
}

/// Posts the starts of `keys` at once (each waits on the hung Redis); returns each key with
/// the status it got (0: no answer).
async fn futures_join(keys: Vec<String>, api: &str) -> Vec<(String, u16)> {
    let url = format!("{api}/v1/executions");
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let url = url.clone();
            tokio::spawn(async move {
                let (status, _) = post(&url, &start_body(&key, i)).await;
                (key, status)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a start task"));
    }
    out
}
