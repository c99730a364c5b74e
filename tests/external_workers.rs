//! The example external workers (`examples/external-worker.py`, `examples/external-worker.sh`)
//! against the real binary (`sluice api` and `sluice scheduler` over a private Redis):
//!
//! - two copies of the Python worker complete 100 jobs of a custom kind while one of them is
//!   SIGKILLed in the middle of a job, twice, and restarted: every job completes, with
//!   exactly one `job.completed` event, and the killed attempts were reclaimed and redone by
//!   another worker;
//! - SIGTERM lets the Python worker finish and report the job it holds, then it exits 0; with
//!   `--exec` a command does its work;
//! - the shell worker completes jobs and reports a failing handler as a failure, reading and
//!   writing JSON with jq and with python3.

mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Setup, events, expect_exit, job_key, job_status, leased_count, leased_ids};
use serde_json::{Value, json};
use sluice_testkit::process::{Child, SIGTERM};
use sluice_testkit::RawConn;
use sluice_testkit::redis::Commands;
use sluice_testkit::{free_port, wait_until};

const USER_SECRET: &str = "user-secret-for-the-external-test-01";
const WORKER_SECRET: &str = "worker-secret-for-the-external-test-01";

/// `sluice api` (with a `user` and a `worker` token) and `sluice scheduler` over a private
/// Redis; the API's URL.
struct Cluster {
    setup: Setup,
    url: String,
    _api: Child,
    _scheduler: Child,
}

impl Cluster {
    async fn start() -> Cluster {
        let setup = Setup::new("concurrency = 1");
        let port = free_port();
        let mut file = OpenOptions::new().append(true).open(&setup.config).expect("config file");
        writeln!(
            file,
            "\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[auth.tokens]]\nsubject = \"ci\"\nrole = \"user\"\ntoken = \"{USER_SECRET}\"\n\n\
             [[auth.tokens]]\nsubject = \"workers\"\nrole = \"worker\"\ntoken = \"{WORKER_SECRET}\"\n"
        )
        .expect("append to the config");
        let api = setup.spawn("api", "api");
        let scheduler = setup.spawn("scheduler", "scheduler");
        let url = format!("http://127.0.0.1:{port}");
        let healthz = format!("{url}/healthz");
        wait_until(Duration::from_secs(15), "the api to answer", || async {
            common::http_client().get(&healthz).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Cluster { setup, url, _api: api, _scheduler: scheduler }
    }

    /// Enqueues a job over the API; returns its id.
    async fn enqueue(&self, queue: &str, kind: &str, payload: Value, max_attempts: u32) -> String {
        let body = json!({"queue": queue, "kind": kind, "payload": payload, "max_attempts": max_attempts});
        let reply = common::http_client()
            .post(format!("{}/v1/jobs", self.url))
            .bearer_auth(USER_SECRET)
            .json(&body)
            .send()
            .await
            .expect("enqueue");
        assert_eq!(reply.status(), reqwest::StatusCode::CREATED);
        let job: Value = reply.json().await.expect("an enqueue answer");
        job["job"]["id"].as_str().expect("a job id").to_string()
    }

    /// Runs `program args…` with the worker token, its output appended to `name`'s log.
    fn spawn_example(&self, name: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
        let log = OpenOptions::new().create(true).append(true).open(self.setup.log(name)).expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("SLUICE_API_URL", &self.url)
            .env("SLUICE_TOKEN", WORKER_SECRET)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        Child::spawn(&mut cmd)
    }

    /// A copy of the Python example on queue `queue`, called `name`.
    fn python_worker(&self, queue: &str, name: &str) -> Child {
        let script = example("external-worker.py");
        let args = [script.as_str(), "--queue", queue, "--worker", name, "--lease-ttl-ms", "1500", "--wait-ms", "2000"];
        self.spawn_example(name, "python3", &args, &[])
    }
}

/// The path of an example script.
fn example(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "examples", name].iter().collect();
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A job's hash (raw `HGETALL`).
fn job_record(conn: &mut RawConn, id: &str) -> HashMap<String, String> {
    conn.hgetall(job_key(id)).expect("HGETALL job")
}

/// The id of a job running under a lease of `worker`, if there is one (raw reads).
fn running_under(conn: &mut RawConn, worker: &str) -> Option<String> {
    leased_ids(conn).into_iter().find(|id| {
        let job = job_record(conn, id);
        job.get("status").map(String::as_str) == Some("running") && job.get("lease_worker").map(String::as_str) == Some(worker)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workers_complete_every_job_exactly_once_while_one_is_sigkilled_mid_job() {
    let cluster = Cluster::start().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(cluster.enqueue("thumbs", "thumbnail", json!({"sleep_ms": 80, "echo": i}), 5).await);
    }
    let _steady = cluster.python_worker("thumbs", "py-steady");
    let mut victim = cluster.python_worker("thumbs", "py-victim-0");
    let mut conn = cluster.setup.raw();

    // Twice: once the victim has done a few jobs, wait until it holds a running one,
    // SIGKILL it, start a fresh copy.
    let mut killed = Vec::new();
    for round in 0..2 {
        let name = format!("py-victim-{round}");
        let job = wait_until(Duration::from_secs(30), "the victim to be running a job", || {
            let reported = std::fs::read_to_string(cluster.setup.log(&name)).unwrap_or_default().matches(": completed").count();
            let found = if reported >= 3 { running_under(&mut conn, &name) } else { None };
            async move { found }
        })
        .await;
        victim.kill();
        killed.push((job, name));
        victim = cluster.python_worker("thumbs", &format!("py-victim-{}", round + 1));
    }

    wait_until(Duration::from_secs(120), "every job to complete", || {
        let done = ids.iter().all(|id| job_status(&mut conn, id).as_deref() == Some("completed"));
        async move { done.then_some(()) }
    })
    .await;

    // Each job completed once, with the output the example worker gives.
    let events = events(&mut conn);
    let mut completed: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == "job.completed") {
        *completed.entry(e.data["job_id"].as_str().expect("job_id").to_string()).or_default() += 1;
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(completed.get(id), Some(&1), "job {id}: one job.completed event");
        let job = job_record(&mut conn, id);
        let result: Value = serde_json::from_str(&job["result"]).expect("a JSON result");
        assert_eq!(result["echo"], i, "job {id}");
    }
    // The killed attempts were reclaimed as failed and redone by another worker.
    for (id, name) in &killed {
        let job = job_record(&mut conn, id);
        let attempts: u32 = job["attempts"].parse().expect("attempts");
        assert!(attempts >= 2, "job {id} was killed in its first attempt: {job:?}");
        let result: Value = serde_json::from_str(&job["result"]).expect("a JSON result");
        assert_ne!(result["worker"].as_str(), Some(name.as_str()), "job {id}");
        let reclaimed = events
            .iter()
            .any(|e| e.kind == "job.failed" && e.data["job_id"] == id.as_str() && e.data["error"].as_str().is_some_and(|m| m.contains("lease expired")));
        assert!(reclaimed, "job {id}: the killed attempt was reclaimed");
    }
    assert_eq!(leased_count(&mut conn), 0, "nothing is left leased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_python_worker_finish_and_report_its_job() {
    let cluster = Cluster::start().await;
    let id = cluster.enqueue("slow", "thumbnail", json!({"sleep_ms": 1500, "echo": "last"}), 1).await;
    let mut worker = cluster.python_worker("slow", "py-term");
    let mut conn = cluster.setup.raw();
    wait_until(Duration::from_secs(20), "the worker to run the job", || {
        let found = running_under(&mut conn, "py-term");
        async move { found }
    })
    .await;
    worker.signal(SIGTERM);
    let status = expect_exit(&mut worker, Duration::from_secs(20), "the python worker").await;
    assert_eq!(status.code(), Some(0), "{}", cluster.setup.log_tail("py-term", 20));
    assert_eq!(job_status(&mut conn, &id).as_deref(), Some("completed"), "{}", cluster.setup.log_tail("py-term", 20));
    let result: Value = serde_json::from_str(&job_record(&mut conn, &id)["result"]).expect("a JSON result");
    assert_eq!((result["echo"].as_str(), result["worker"].as_str()), (Some("last"), Some("py-term")));

    // With `--exec`, a command does the work: the leased job on its stdin, its output on
    // stdout; `--max-jobs` ends the worker.
    let id = cluster.enqueue("exec", "double", json!({"n": 21}), 1).await;
    let script = example("external-worker.py");
    let double = "python3 -c 'import json, sys; job = json.load(sys.stdin); print(json.dumps({\"n\": job[\"payload\"][\"n\"] * 2}))'";
    let args = [script.as_str(), "--queue", "exec", "--worker", "py-exec", "--max-jobs", "1", "--exec", double];
    let mut worker = cluster.spawn_example("py-exec", "python3", &args, &[]);
    let status = expect_exit(&mut worker, Duration::from_secs(20), "the python worker").await;
    assert_eq!(status.code(), Some(0), "{}", cluster.setup.log_tail("py-exec", 20));
    assert_eq!(job_record(&mut conn, &id).get("result").map(String::as_str), Some("{\"n\":42}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_worker_completes_jobs_and_reports_failures_with_jq_and_with_python() {
    let cluster = Cluster::start().await;
    let jq = Command::new("sh").args(["-c", "command -v jq"]).output().is_ok_and(|o| o.status.success());
    let tools: &[&str] = if jq { &["jq", "python3"] } else { &["python3"] };
    let handler = r#"p=$(cat); case $p in *fail*) echo "cannot make it: $p" >&2; exit 3;; esac; printf '{"got":%s,"attempt":%s,"kind":"%s"}' "$p" "$SLUICE_ATTEMPT" "$SLUICE_JOB_KIND""#;
    for tool in tools {
        let queue = format!("sh-{tool}");
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(cluster.enqueue(&queue, "echo", json!({"n": i}), 3).await);
        }
        let failing = cluster.enqueue(&queue, "echo", json!({"fail": true}), 1).await;
        let script = example("external-worker.sh");
        let name = format!("sh-worker-{tool}");
        let args = [script.as_str(), "-q", &queue, "-w", &name, "-n", "4", "-W", "2000", "-t", "15000", "--", "sh", "-c", handler];
        let mut worker = cluster.spawn_example(&name, "bash", &args, &[("JSON_TOOL", tool)]);
        let status = expect_exit(&mut worker, Duration::from_secs(60), "the shell worker").await;
        let log = cluster.setup.log_tail(&name, 30);
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(log.contains(&format!("JSON with {tool}")), "{log}");

        let mut conn = cluster.setup.raw();
        for (i, id) in ids.iter().enumerate() {
            let job = job_record(&mut conn, id);
            assert_eq!(job.get("status").map(String::as_str), Some("completed"), "{tool}: {job:?}\n{log}");
            let result: Value = serde_json::from_str(&job["result"]).expect("a JSON result");
            assert_eq!(result, json!({"got": {"n": i}, "attempt": 1, "kind": "echo"}), "{tool}");
        }
        let job = job_record(&mut conn, &failing);
        assert_eq!(job.get("status").map(String::as_str), Some("failed"), "{tool}: {job:?}\n{log}");
        assert!(job["last_error"].contains("exit 3: cannot make it"), "{tool}: {job:?}");
    }
}
