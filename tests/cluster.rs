//! sluice on a Redis Cluster: the real binary (API, scheduler, two workers) over a private
//! cluster of 3 masters with `redis.shards = 8`. The shards live on every master, executions
//! of several step kinds spread over them and each completes exactly once; listings, queue
//! figures, the event stream, `/readyz` and `/metrics` read every master.
//!
//! The rest of the end-to-end suite runs on a cluster too with `SLUICE_TEST_REDIS=cluster`
//! (see `docs/SCALING.md`); this test always runs.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{Setup, count_per_step, events, leased_count, tag, wait_for_api};
use serde_json::{Value, json};
use sluice_core::ids;
use sluice_testkit::{CLUSTER_SHARDS, TestRedis, free_port, wait_until};

const EXECUTIONS: usize = 40;
const STEPS: u64 = 4;
/// Idempotency keys of the posts of the test, all distinct.
static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The API of the test.
struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            let key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req = req.json(&b).header("Idempotency-Key", format!("key-{key}"));
        }
        let resp = req.send().await.expect("the api answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {reply}"
        );
        reply
    }

    /// Leases what the external lane of `queue` has and completes it; how many it completed.
    async fn complete_external_jobs(&self, queue: &str) -> usize {
        let leased = self
            .post(
                &format!("/v1/queues/{queue}/lease"),
                json!({"worker": "test-external", "max": 20, "wait_ms": 500}),
            )
            .await;
        let jobs = leased["jobs"].as_array().cloned().unwrap_or_default();
        for job in &jobs {
            let id = job["id"].as_str().expect("a job id");
            let execution = job["execution_id"].as_str().expect("a step job");
            self.post(
                &format!("/v1/jobs/{id}/result"),
                json!({"token": job["token"], "outcome": "completed", "output": {"checked": execution}}),
            )
            .await;
        }
        jobs.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_of_every_cheap_kind_run_exactly_once_over_eight_shards_on_three_masters() {
    let setup = Setup::cluster(3, "queues = [\"default\"]\nconcurrency = 8");
    let TestRedis::Cluster(cluster) = &setup.redis else {
        unreachable!("Setup::cluster starts a cluster")
    };

    // The 8 shards' hash tags spread over the 3 masters.
    let home: HashMap<u32, usize> = (0..CLUSTER_SHARDS)
        .map(|s| (s, cluster.node_of(&tag(s))))
        .collect();
    let masters: BTreeSet<usize> = home.values().copied().collect();
    assert_eq!(masters.len(), 3, "shards by master: {home:?}");

    let port = free_port();
    setup.append(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n"
    ));
    let _api_process = setup.spawn("api", "api");
    let _scheduler = setup.spawn("scheduler", "scheduler");
    let _worker_a = setup.spawn("worker", "worker-a");
    let _worker_b = setup.spawn("worker", "worker-b");
    let api = Api {
        url: format!("http://127.0.0.1:{port}"),
        http: common::http_client(),
    };
    wait_for_api(&api.url).await;
    let ready = api
        .http
        .get(format!("{}/readyz", api.url))
        .send()
        .await
        .expect("readyz");
    assert!(
        ready.status().is_success(),
        "/readyz on a cluster: {}",
        ready.status()
    );

    let ran = setup.dir.path().join("ran");
    let pipeline = json!({
        "id": "spread",
        "steps": [
            {"name": "run", "kind": "command", "run": ["sh", "-c", format!("echo \"$SLUICE_EXECUTION_ID\" >> {}", ran.display())]},
            {"name": "pass", "kind": "noop", "output": {"ok": true}},
            {"name": "rest", "kind": "sleep", "for": "200ms"},
            {"name": "check", "kind": "external", "queue": "checks"},
        ],
    });
    let (status, body) = api
        .send(reqwest::Method::PUT, "/v1/pipelines/spread", Some(pipeline))
        .await;
    assert!(status < 300, "{status} {body}");
    let mut started = Vec::new();
    for i in 0..EXECUTIONS {
        let e = api
            .post(
                "/v1/executions",
                json!({"pipeline": "spread", "input": {"n": i}}),
            )
            .await;
        started.push(e["id"].as_str().expect("an execution id").to_string());
    }
    // The executions live on every master (40 random shards of 8 miss a master with
    // probability below 1e-4).
    let shards: BTreeSet<u32> = started
        .iter()
        .map(|id| ids::shard_of(id, ids::EXECUTION).expect("an execution id"))
        .collect();
    let used: BTreeSet<usize> = shards.iter().map(|s| home[s]).collect();
    assert_eq!(used.len(), 3, "executions on shards {shards:?}");

    // An external worker completes the external steps until every execution has ended.
    let external = std::sync::atomic::AtomicUsize::new(0);
    wait_until(
        Duration::from_secs(45),
        "every execution to end",
        || async {
            external.fetch_add(
                api.complete_external_jobs("checks").await,
                std::sync::atomic::Ordering::Relaxed,
            );
            let mut live = 0;
            for id in &started {
                let e = api.get(&format!("/v1/executions/{id}")).await;
                if !["completed", "failed", "cancelled"]
                    .contains(&e["status"].as_str().unwrap_or_default())
                {
                    live += 1;
                }
            }
            (live == 0).then_some(())
        },
    )
    .await;

    // Each completed, each step exactly once.
    for id in &started {
        let e = api.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(e["status"], "completed", "{e}");
        assert_eq!(e["steps"][3]["output"], json!({"checked": id}), "{e}");
    }
    assert_eq!(
        external.into_inner(),
        EXECUTIONS,
        "one external job per execution"
    );
    let lines = std::fs::read_to_string(&ran).expect("the command ran");
    let mut per_execution: HashMap<&str, usize> = HashMap::new();
    for line in lines.lines() {
        *per_execution.entry(line.trim()).or_default() += 1;
    }
    assert_eq!(
        per_execution.len(),
        EXECUTIONS,
        "every execution ran its command"
    );
    assert!(
        per_execution.values().all(|&n| n == 1),
        "a command ran twice: {per_execution:?}"
    );
    let mut conn = setup.raw();
    let completed = count_per_step(&events(&mut conn), "execution.step.completed");
    for id in &started {
        for step in 0..STEPS {
            assert_eq!(
                completed.get(&(id.clone(), step)),
                Some(&1),
                "{id} step {step}: {completed:?}"
            );
        }
    }
    assert_eq!(leased_count(&mut conn), 0, "nothing is left leased");

    // Reads over every master: the listing, the queue figures, the event stream, metrics.
    let mut listed = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/executions?pipeline=spread&limit=15&cursor={c}"),
            None => "/v1/executions?pipeline=spread&limit=15".to_string(),
        };
        let page = api.get(&path).await;
        for e in page["items"].as_array().expect("items") {
            listed.insert(e["id"].as_str().expect("an id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        listed,
        started.iter().cloned().collect::<BTreeSet<_>>(),
        "the listing covers every shard"
    );
    let queue = api.get("/v1/queues/default").await;
    assert_eq!(
        queue["completed"],
        json!(EXECUTIONS * 3),
        "command, noop and sleep jobs, summed over the shards: {queue}"
    );
    assert_eq!(
        queue["workers"].as_array().map(Vec::len),
        Some(2),
        "{queue}"
    );
    let checks = api.get("/v1/queues/checks").await;
    assert_eq!(checks["completed"], json!(EXECUTIONS), "{checks}");
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_redis_round_trip_seconds"),
        "metrics on a cluster:\n{metrics}"
    );
}
