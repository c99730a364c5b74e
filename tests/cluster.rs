//! sluice on a Redis Cluster: the real binary (API, scheduler, two workers) over a private
//! cluster of 3 masters with `redis.shards = 8`. The shards live on every master, executions
//! of several step kinds spread over them and each completes exactly once; listings, queue
//! figures, `/readyz` and `/metrics` read every master; a master killed and restarted is
//! reconnected to.
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

/// The API of the test, with the sluice processes behind it.
struct Api {
    url: String,
    http: reqwest::Client,
    _processes: Vec<sluice_testkit::process::Child>,
}

impl Api {
    /// Starts the API (no authentication), a scheduler and two workers over `setup`.
    async fn start(setup: &Setup) -> Api {
        let port = free_port();
        setup.append(&format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\ndisabled = true\n"
        ));
        let processes = vec![
            setup.spawn("api", "api"),
            setup.spawn("scheduler", "scheduler"),
            setup.spawn("worker", "worker-a"),
            setup.spawn("worker", "worker-b"),
        ];
        let api = Api {
            url: format!("http://127.0.0.1:{port}"),
            http: common::http_client(),
            _processes: processes,
        };
        wait_for_api(&api.url).await;
        api
    }

    /// Whether `/readyz` answers 200.
    async fn ready(&self) -> bool {
        self.http
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Applies `pipeline` (JSON file form).
    async fn put_pipeline(&self, pipeline: Value) {
        let id = pipeline["id"].as_str().expect("a pipeline id").to_string();
        let (status, body) = self
            .send(
                reqwest::Method::PUT,
                &format!("/v1/pipelines/{id}"),
                Some(pipeline),
            )
            .await;
        assert!(status < 300, "{status} {body}");
    }

    /// Starts `n` executions of `pipeline`; their ids.
    async fn start_executions(&self, pipeline: &str, n: usize) -> Vec<String> {
        let mut started = Vec::with_capacity(n);
        for i in 0..n {
            let e = self
                .post(
                    "/v1/executions",
                    json!({"pipeline": pipeline, "input": {"n": i}}),
                )
                .await;
            started.push(e["id"].as_str().expect("an execution id").to_string());
        }
        started
    }

    /// How many of `ids` are still live.
    async fn live(&self, ids: &[String]) -> usize {
        let mut live = 0;
        for id in ids {
            let e = self.get(&format!("/v1/executions/{id}")).await;
            if !["completed", "failed", "cancelled"]
                .contains(&e["status"].as_str().unwrap_or_default())
            {
                live += 1;
            }
        }
        live
    }

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
    let setup = Setup::cluster(3, false, "queues = [\"default\"]\nconcurrency = 8");
    let TestRedis::Cluster(cluster) = &setup.redis else {
        unreachable!("Setup::cluster starts a cluster")
    };

    // The 8 shards' hash tags spread over the 3 masters.
    let home: HashMap<u32, usize> = (0..CLUSTER_SHARDS)
        .map(|s| (s, cluster.node_of(&tag(s))))
        .collect();
    let masters: BTreeSet<usize> = home.values().copied().collect();
    assert_eq!(masters.len(), 3, "shards by master: {home:?}");

    let api = Api::start(&setup).await;
    assert!(api.ready().await, "/readyz on a cluster");

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
    api.put_pipeline(pipeline).await;
    let started = api.start_executions("spread", EXECUTIONS).await;
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
            (api.live(&started).await == 0).then_some(())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_and_restarted_is_reconnected_to_and_work_goes_on() {
    let mut setup = Setup::cluster(3, true, "concurrency = 4");
    let api = Api::start(&setup).await;
    api.put_pipeline(json!({
        "id": "pair",
        "steps": [
            {"name": "run", "kind": "command", "run": ["true"]},
            {"name": "pass", "kind": "noop"},
        ],
    }))
    .await;
    let before = api.start_executions("pair", 10).await;
    wait_until(
        Duration::from_secs(30),
        "the first executions to end",
        || async { (api.live(&before).await == 0).then_some(()) },
    )
    .await;

    // The master of shard 0 dies (SIGKILL) and comes back on its port with its AOF.
    let TestRedis::Cluster(cluster) = &mut setup.redis else {
        unreachable!("Setup::cluster starts a cluster")
    };
    let victim = cluster.node_of(&tag(0));
    cluster.node_mut(victim).kill();
    cluster.node_mut(victim).restart();
    cluster.wait_ok();

    wait_until(
        Duration::from_secs(30),
        "/readyz to answer 200 again",
        || async { api.ready().await.then_some(()) },
    )
    .await;
    let after = api.start_executions("pair", 30).await;
    wait_until(
        Duration::from_secs(45),
        "the executions started after the restart to end",
        || async { (api.live(&after).await == 0).then_some(()) },
    )
    .await;
    for id in before.iter().chain(&after) {
        let e = api.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(e["status"], "completed", "{e}");
    }
    // 30 random shards of 8 all miss the restarted master (2 shards or more) with probability < 2e-4.
    let TestRedis::Cluster(cluster) = &setup.redis else {
        unreachable!()
    };
    let shards: BTreeSet<u32> = after
        .iter()
        .map(|id| ids::shard_of(id, ids::EXECUTION).expect("an execution id"))
        .collect();
    assert!(
        shards.iter().any(|s| cluster.node_of(&tag(*s)) == victim),
        "no execution after the restart lived on the restarted master (shards {shards:?}); the test proved nothing"
    );
}
