//! The chaos test: executions mixing command steps, a gate, a sleep, an external job and an
//! approval run on three `sluice worker`, two `sluice scheduler` and one `sluice api`
//! processes (the real binary) while a chaos driver SIGKILLs a random one of them every
//! 500 ms and starts it again, and restarts Redis (AOF on) twice. Schedules fire every
//! minute meanwhile. The test plays the external worker (over the HTTP API, replaying and
//! duplicating some of its result posts) and the approver. When everything has ended, an
//! invariant checker reads the final state raw and verifies that:
//!
//! - every execution reached the status known in advance from its input (most complete;
//!   some fail at the gate, some at the external step, some are rejected);
//! - no step completed twice, and each step's output is the value chained from the step
//!   before it through placeholders;
//! - no external result was applied twice: replays answer the first answer, stale and
//!   foreign posts change nothing;
//! - no job is left running, leased, pending or queued;
//! - each due time of each schedule fired once, with one execution per fire;
//! - the event stream agrees with the final states.
//!
//! The size is set from the environment (see [`Knobs`]): the default is the short form run
//! by `cargo test`; the long form (2 000 executions) is documented in docs/TESTING.md.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{RawEvent, Setup, events, http_client, job_status, leased_count, shards, tag, wait_for_api, zrange_every_shard};
use serde_json::{Value, json};
use sluice_core::{Execution, ExecutionStatus, FailureKind, StepStatus, ids, pipeline};
use sluice_store::engine::Engine;
use sluice_testkit::process::Child;
use sluice_testkit::RawConn;
use sluice_testkit::redis::Commands;
use sluice_testkit::{free_port, wait_until};

const USER: &str = "chaos-user-token-0123456789abcdef";
const WORKER: &str = "chaos-worker-token-0123456789abcdef";
const PIPELINE_ID: &str = "chaos";
const TICK_PIPELINE_ID: &str = "chaos-tick";
const EXT_QUEUE: &str = "ext";
/// How long Redis stays down at each restart.
const REDIS_DOWN: Duration = Duration::from_millis(2500);
/// Steps of the chaos pipeline, in order.
const STEPS: [&str; 7] = ["first", "check", "nap", "second", "ext", "ok", "last"];

/// The pipeline every execution runs, with input `{"n": n}`:
/// `first` outputs `3n+1`; the gate `check` answers pending once when `n % 4 == 0` and fails
/// for good when `n % 10 == 3`; `nap` sleeps; `second` outputs `first + 2`; the external
/// step `ext` (the test's external worker) outputs `2 × second`, or fails for good when
/// `n % 10 == 7`; the approval `ok` is rejected when `n % 10 == 5`; `last` checks the chain
/// and outputs it with `n`. `{dir}` is a scratch directory for the gate's marker files.
const PIPELINE: &str = r#"
id = "chaos"

[[steps]]
name = "first"
kind = "command"
run = ["sh", "-c", "printf '{\"v\":%s}' $(( $1 * 3 + 1 )) > \"$SLUICE_OUTPUT\"", "sh", "{{ input.n }}"]
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }

[[steps]]
name = "check"
kind = "gate"
probe = { run = ["sh", "-c", "n=$1; [ $(( n % 10 )) = 3 ] && exit 1; [ $(( n % 4 )) = 0 ] || exit 0; [ -e \"$2\" ] && exit 0; touch \"$2\"; exit 75", "sh", "{{ input.n }}", "{dir}/{{ execution.id }}"] }
interval = "1s"
max_polls = 100
max_probe_errors = 100
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }

[[steps]]
name = "nap"
kind = "sleep"
for = "1s"

[[steps]]
name = "second"
kind = "command"
run = ["sh", "-c", "printf '{\"v\":%s}' $(( $1 + 2 )) > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.first.output.v }}"]
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }

[[steps]]
name = "ext"
kind = "external"
queue = "ext"
params = { op = "double" }
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }

[[steps]]
name = "ok"
kind = "approval"

[[steps]]
name = "last"
kind = "command"
run = ["sh", "-c", "[ \"$1\" = $(( ($2 * 3 + 3) * 2 )) ] || exit 9; printf '{\"v\":%s,\"n\":%s}' \"$1\" \"$2\" > \"$SLUICE_OUTPUT\"", "sh", "{{ steps.ext.output.v }}", "{{ input.n }}"]
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }
"#;

/// What the schedules run: one command step echoing the schedule's input.
const TICK_PIPELINE: &str = r#"
id = "chaos-tick"

[[steps]]
name = "tick"
kind = "command"
run = ["sh", "-c", "printf '{\"s\":\"%s\"}' \"$1\" > \"$SLUICE_OUTPUT\"", "sh", "{{ input.s }}"]
retry = { max_attempts = 40, backoff = "fixed", initial = "100ms", jitter = false }
"#;

/// The size and pace of a run, from the environment.
#[derive(Debug, Clone)]
struct Knobs {
    /// `SLUICE_CHAOS_EXECUTIONS` (default 200): executions of the chaos pipeline; half are
    /// started before the chaos through the store, half during it through the API.
    executions: usize,
    /// `SLUICE_CHAOS_KILL_EVERY_MS` (default 500): time between two SIGKILLs.
    kill_every: Duration,
    /// `SLUICE_CHAOS_REDIS_RESTARTS` (default 2): Redis restarts, spread over the run.
    redis_restarts: usize,
    /// `SLUICE_CHAOS_SCHEDULES` (default 3): schedules firing every minute.
    schedules: usize,
    /// `SLUICE_CHAOS_MIN_S` (default 75): the chaos lasts at least this long (so that the
    /// schedules fire at least once), the API starts spread over it.
    min_duration: Duration,
    /// `SLUICE_CHAOS_DEADLINE_S` (default: the minimum duration plus 60 s plus 0.6 s per
    /// execution): how long the executions may take to end.
    deadline: Duration,
    /// `SLUICE_CHAOS_SEED` (default: the clock): seed of the chaos driver's choices.
    seed: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        fn var(name: &str) -> Option<u64> {
            std::env::var(name).ok().map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        }
        let executions = var("SLUICE_CHAOS_EXECUTIONS").unwrap_or(200) as usize;
        assert!(
            executions >= 20,
            "SLUICE_CHAOS_EXECUTIONS must be at least 20"
        );
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        let min_duration = Duration::from_secs(var("SLUICE_CHAOS_MIN_S").unwrap_or(75));
        Knobs {
            executions,
            kill_every: Duration::from_millis(var("SLUICE_CHAOS_KILL_EVERY_MS").unwrap_or(500)),
            redis_restarts: var("SLUICE_CHAOS_REDIS_RESTARTS").unwrap_or(2) as usize,
            schedules: var("SLUICE_CHAOS_SCHEDULES").unwrap_or(3) as usize,
            min_duration,
            deadline: Duration::from_secs(
                var("SLUICE_CHAOS_DEADLINE_S")
                    .unwrap_or(min_duration.as_secs() + 60 + executions as u64 * 6 / 10),
            ),
            seed: var("SLUICE_CHAOS_SEED").unwrap_or(clock) | 1,
        }
    }
}

/// How an execution of input `n` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Completed,
    /// The gate's probe answers fail.
    GateFails,
    /// The external worker posts a non-retryable failure.
    ExternalFails,
    /// The approver rejects it.
    Rejected,
}

fn expected(n: u64) -> Expected {
    match n % 10 {
        3 => Expected::GateFails,
        5 => Expected::Rejected,
        7 => Expected::ExternalFails,
        _ => Expected::Completed,
    }
}

/// `first`, `second`, `ext` outputs of input `n`.
fn chain(n: u64) -> (u64, u64, u64) {
    let first = 3 * n + 1;
    let second = first + 2;
    (first, second, 2 * second)
}

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed
/// with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A stable hash of a string, for per-job choices of the external worker.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------
// Raw reads of the final state. Every key the checker reads is spelled here, so that a
// topology with other key placement only needs these few functions changed.
// ---------------------------------------------------------------------------------------

/// Ready and delayed jobs of every queue and lane of every shard (raw `SMEMBERS` + `ZCARD`),
/// non-empty ones.
fn queued_jobs(conn: &mut RawConn) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for shard in 0..shards(conn) {
        let queues: Vec<String> = conn.smembers(format!("{}:queues", tag(shard))).expect("SMEMBERS queues");
        for q in queues {
            for lane in ["", ":external"] {
                for set in ["ready", "delayed"] {
                    let key = format!("{}:q:{q}{lane}:{set}", tag(shard));
                    let n: usize = conn.zcard(&key).expect("ZCARD queue");
                    if n > 0 {
                        out.insert(key, n);
                    }
                }
            }
        }
    }
    out
}

/// How many executions of `pipeline` exist over every shard (raw `ZCARD`).
fn pipeline_execution_count(conn: &mut RawConn, pipeline: &str) -> usize {
    (0..shards(conn))
        .map(|shard| {
            let n: usize = conn
                .zcard(format!("{}:exs:pipeline:{pipeline}", tag(shard)))
                .expect("ZCARD pipeline executions");
            n
        })
        .sum()
}

/// The ids of every execution of `pipeline` over every shard (raw `ZRANGE`).
fn pipeline_executions(conn: &mut RawConn, pipeline: &str) -> Vec<String> {
    zrange_every_shard(conn, &format!("exs:pipeline:{pipeline}"))
}

/// The execution document of `id`, in the shard its id names (raw `HGET … doc`).
fn execution_doc(conn: &mut RawConn, id: &str) -> Execution {
    let shard = ids::shard_of(id, ids::EXECUTION).expect("an execution id");
    let doc: String = conn
        .hget(format!("{}:ex:{id}", tag(shard)), "doc")
        .unwrap_or_else(|err| panic!("HGET execution {id}: {err}"));
    serde_json::from_str(&doc).unwrap_or_else(|err| panic!("execution {id} does not parse: {err}"))
}

// ---------------------------------------------------------------------------------------
// The cluster of processes and the chaos driver.
// ---------------------------------------------------------------------------------------

/// One sluice process the driver may kill: its role, its log name and the running child.
struct Role {
    role: &'static str,
    name: String,
    child: Child,
    kills: usize,
    /// Exits the driver did not cause (found dead when it looked).
    self_exits: Vec<String>,
}

struct Cluster {
    setup: Setup,
    api: String,
    roles: Vec<Role>,
}

impl Cluster {
    fn start() -> Cluster {
        let setup = Setup::with_aof(
            "concurrency = 8\nlease_ttl = \"2s\"\nshutdown_timeout = \"2s\"\nidle_poll = \"1s\"\nkill_grace = \"1s\"",
        );
        let port = free_port();
        setup.append(&format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[events]\ncap = 5000000\n\n\
             [[auth.tokens]]\nsubject = \"approver\"\nrole = \"user\"\ntoken = \"{USER}\"\n\n\
             [[auth.tokens]]\nsubject = \"external\"\nrole = \"worker\"\ntoken = \"{WORKER}\"\n"
        ));
        let mut roles = Vec::new();
        for (role, name) in [
            ("worker", "worker-0"),
            ("worker", "worker-1"),
            ("worker", "worker-2"),
            ("scheduler", "scheduler-0"),
            ("scheduler", "scheduler-1"),
            ("api", "api"),
        ] {
            let child = setup.spawn(role, name);
            roles.push(Role {
                role,
                name: name.to_string(),
                child,
                kills: 0,
                self_exits: Vec::new(),
            });
        }
        Cluster {
            setup,
            api: format!("http://127.0.0.1:{port}"),
            roles,
        }
    }

    /// Restarts any process that exited without being killed, noting it.
    fn revive(&mut self) {
        for r in &mut self.roles {
            if let Some(status) = r.child.try_wait() {
                let tail = self.setup.log_tail(&r.name, 2);
                r.self_exits.push(format!("{status}: {tail}"));
                r.child = self.setup.spawn(r.role, &r.name);
            }
        }
    }

    /// SIGKILLs process `i` and starts it again at once.
    fn kill_and_restart(&mut self, i: usize) {
        self.revive();
        let r = &mut self.roles[i];
        r.child.kill();
        r.kills += 1;
        r.child = self.setup.spawn(r.role, &r.name);
    }

    fn kills(&self) -> usize {
        self.roles.iter().map(|r| r.kills).sum()
    }
}

// ---------------------------------------------------------------------------------------
// The API clients the test plays: starter, approver, external worker.
// ---------------------------------------------------------------------------------------

/// One answer of the API, or `None` when there was none (connection refused or cut, as
/// while the API is killed).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn call(req: reqwest::RequestBuilder) -> Option<Answer> {
    let reply = req.timeout(Duration::from_secs(10)).send().await.ok()?;
    let status = reply.status().as_u16();
    let replayed = reply
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = reply.json::<Value>().await.unwrap_or(Value::Null);
    Some(Answer {
        status,
        replayed,
        body,
    })
}

/// Calls `make()` until it gets an answer that is not a 5xx (the API or Redis was down),
/// for at most two minutes.
async fn persist<F>(mut make: F) -> Option<Answer>
where
    F: FnMut() -> reqwest::RequestBuilder,
{
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(120) {
        match call(make()).await {
            Some(a) if a.status < 500 => return Some(a),
            _ => tokio::time::sleep(Duration::from_millis(150)).await,
        }
    }
    None
}

/// Starts executions `from..to` over the API, one every `pace`, each with an idempotency
/// key, retrying through the chaos; returns their ids in order.
async fn start_over_api(
    api: String,
    from: usize,
    to: usize,
    tag: String,
    pace: Duration,
) -> Vec<String> {
    let client = http_client();
    let mut ids = Vec::new();
    for n in from..to {
        tokio::time::sleep(pace).await;
        let body = json!({"pipeline": PIPELINE_ID, "input": {"n": n}, "idempotency_key": format!("{tag}-{n}")});
        let answer = persist(|| {
            client
                .post(format!("{api}/v1/executions"))
                .bearer_auth(USER)
                .json(&body)
        })
        .await
        .unwrap_or_else(|| panic!("execution {n} could not be started over the API in 2 minutes"));
        assert!(
            matches!(answer.status, 200 | 201),
            "start of {n}: {answer:?}"
        );
        ids.push(
            answer.body["id"]
                .as_str()
                .expect("an execution id")
                .to_string(),
        );
    }
    ids
}

/// Approves every blocked execution of the chaos pipeline, or rejects it when its input
/// says so; votes twice on some. Runs until `stop`.
async fn approver(api: String, stop: Arc<AtomicBool>) {
    let client = http_client();
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{api}/v1/executions?status=blocked&pipeline={PIPELINE_ID}&limit=200");
        if let Some(page) = call(client.get(url).bearer_auth(USER))
            .await
            .filter(|a| a.status == 200)
        {
            for item in page.body["items"].as_array().cloned().unwrap_or_default() {
                let id = item["id"].as_str().unwrap_or_default();
                let n = item["input"]["n"]
                    .as_u64()
                    .expect("a chaos execution has input n");
                let (verb, body) = if expected(n) == Expected::Rejected {
                    ("reject", json!({"reason": "the chaos test rejects it"}))
                } else {
                    ("approve", json!({"comment": "the chaos test approves it"}))
                };
                let url = format!("{api}/v1/executions/{id}/steps/ok/{verb}");
                let votes = if n % 3 == 0 { 2 } else { 1 };
                for _ in 0..votes {
                    let _ = call(client.post(&url).bearer_auth(USER).json(&body)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A result post of the external worker, kept to be replayed.
#[derive(Debug, Clone)]
struct Post {
    job: String,
    key: String,
    body: Value,
}

/// What the external worker saw, for the checker.
#[derive(Debug, Default)]
struct ExternalLog {
    /// Every definite answer to a post, by (job, key).
    answers: Vec<(Post, Answer)>,
    /// Posts of a result for a settled attempt under another key.
    foreign: Vec<(Post, Answer)>,
    /// Late posts with the token of an attempt the worker abandoned.
    stale: Vec<(Post, Answer)>,
    /// Replays of applied posts.
    replays: Vec<(Post, Answer)>,
    /// Attempts abandoned (not posted; their lease expires): job → the post it would have been.
    abandoned: HashMap<String, Post>,
    /// Posts that got no definite answer in two minutes.
    unanswered: Vec<Post>,
    leased: usize,
}

impl ExternalLog {
    fn applied(&self) -> Vec<Post> {
        self.answers
            .iter()
            .filter(|(_, a)| a.status == 200)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

async fn post_result(client: &reqwest::Client, api: &str, post: &Post) -> Option<Answer> {
    let url = format!("{api}/v1/jobs/{}/result", post.job);
    persist(|| {
        client
            .post(&url)
            .bearer_auth(WORKER)
            .header("Idempotency-Key", &post.key)
            .json(&post.body)
    })
    .await
}

/// The test's external worker: leases `ext` jobs over the API and posts their results
/// with an `Idempotency-Key`. Per job (from a hash of its id and attempt) it abandons some
/// attempts (their leases expire and they come back), posts some results twice at once,
/// posts a result under a second key after the first was applied, and posts the stale
/// result of an abandoned attempt when the job comes back. Runs until `stop`.
async fn external_worker(
    api: String,
    name: String,
    log: Arc<Mutex<ExternalLog>>,
    stop: Arc<AtomicBool>,
) {
    let client = http_client();
    let lease_url = format!("{api}/v1/queues/{EXT_QUEUE}/lease");
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"worker": name, "max": 4, "wait_ms": 1000, "lease_ttl_ms": 6000});
        let Some(answer) = call(client.post(&lease_url).bearer_auth(WORKER).json(&body)).await
        else {
            tokio::time::sleep(Duration::from_millis(150)).await;
            continue;
        };
        if answer.status != 200 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            continue;
        }
        for job in answer.body["jobs"].as_array().cloned().unwrap_or_default() {
            let id = job["id"].as_str().expect("job id").to_string();
            let attempt = job["attempt"].as_u64().expect("attempt");
            let token = job["token"].as_str().expect("token").to_string();
            let context = &job["payload"]["context"];
            let n = context["input"]["n"]
                .as_u64()
                .expect("input n in the context");
            let second = context["steps"]["second"]["output"]["v"]
                .as_u64()
                .expect("second's output in the context");
            assert_eq!(
                job["payload"]["params"],
                json!({"op": "double"}),
                "params of {id}"
            );
            let body = if expected(n) == Expected::ExternalFails {
                json!({"token": token, "outcome": "failed", "error": "deterministic failure", "retryable": false})
            } else {
                json!({"token": token, "outcome": "completed", "output": {"v": second * 2}})
            };
            let post = Post {
                job: id.clone(),
                key: format!("{id}-{attempt}"),
                body,
            };
            let stale = {
                let mut log = log.lock().expect("log");
                log.leased += 1;
                log.abandoned.remove(&id)
            };
            if let Some(stale) = stale {
                // The abandoned attempt's lease was reclaimed: its late result must change nothing.
                if let Some(a) = post_result(&client, &api, &stale).await {
                    log.lock().expect("log").stale.push((stale, a));
                }
            }
            let roll = fnv(&post.key) % 100;
            if roll < 6 && attempt < 3 {
                log.lock().expect("log").abandoned.insert(id, post);
                continue;
            }
            let answers: Vec<Option<Answer>> = if roll < 20 {
                let (a, b) = tokio::join!(
                    post_result(&client, &api, &post),
                    post_result(&client, &api, &post)
                );
                vec![a, b]
            } else {
                vec![post_result(&client, &api, &post).await]
            };
            {
                let mut guard = log.lock().expect("log");
                for a in answers {
                    match a {
                        Some(a) => guard.answers.push((post.clone(), a)),
                        None => guard.unanswered.push(post.clone()),
                    }
                }
            }
            if (20..26).contains(&roll) {
                let foreign = Post {
                    key: format!("{}-other", post.key),
                    ..post.clone()
                };
                if let Some(a) = post_result(&client, &api, &foreign).await {
                    log.lock().expect("log").foreign.push((foreign, a));
                }
            }
        }
    }
}

/// Replays applied result posts with their own keys, until `stop`, then once more each.
async fn replayer(api: String, log: Arc<Mutex<ExternalLog>>, stop: Arc<AtomicBool>) {
    let client = http_client();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let applied = log.lock().expect("log").applied();
        if let Some(post) = applied.get(next) {
            next += 1;
            if let Some(a) = post_result(&client, &api, post).await {
                log.lock().expect("log").replays.push((post.clone(), a));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replays every applied post once (after the chaos and the Redis restarts).
async fn replay_all(api: &str, log: &Arc<Mutex<ExternalLog>>) {
    let client = http_client();
    let applied = log.lock().expect("log").applied();
    for post in applied {
        let a = post_result(&client, api, &post)
            .await
            .unwrap_or_else(|| panic!("no answer to a replay of {post:?}"));
        log.lock().expect("log").replays.push((post, a));
    }
}

// ---------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_kills_and_redis_restarts_break_no_invariant() {
    let knobs = Knobs::from_env();
    eprintln!("chaos: {knobs:?}");
    let mut cluster = Cluster::start();
    let api = cluster.api.clone();
    let engine = cluster.setup.engine().await;
    wait_for_api(&api).await;

    // Pipelines, then the schedules (every minute, overlapping allowed so that no fire is
    // skipped for a busy target).
    let markers = cluster.setup.dir.path().join("gate");
    std::fs::create_dir(&markers).expect("marker dir");
    let text = PIPELINE.replace("{dir}", markers.to_str().expect("UTF-8 path"));
    for t in [text.as_str(), TICK_PIPELINE] {
        let p = pipeline::parse_toml(t).expect("pipeline parses");
        engine
            .store()
            .put_pipeline(&p, engine.now())
            .await
            .expect("put pipeline");
    }
    let client = http_client();
    let mut schedules = Vec::new();
    for i in 0..knobs.schedules {
        let body = json!({"name": format!("chaos-{i}"), "pipeline": TICK_PIPELINE_ID, "cron": "* * * * *",
            "overlap": "allow", "input": {"s": format!("chaos-{i}")}});
        let reply = client
            .post(format!("{api}/v1/schedules"))
            .bearer_auth(USER)
            .json(&body)
            .send()
            .await
            .expect("create schedule");
        assert_eq!(reply.status().as_u16(), 201, "create schedule {i}");
        let created: Value = reply.json().await.expect("schedule");
        schedules.push(created["id"].as_str().expect("schedule id").to_string());
    }

    // Half the executions now, through the store; the other half during the chaos, over the API.
    let half = knobs.executions / 2;
    let mut ids = Vec::new();
    for n in 0..half {
        let p = engine
            .store()
            .get_pipeline(PIPELINE_ID)
            .await
            .expect("get")
            .expect("pipeline");
        let req = sluice_core::execution::StartRequest {
            pipeline: p.pipeline,
            pipeline_version: p.version,
            input: json!({"n": n}),
            target: None,
            idempotency_key: None,
        };
        match engine
            .store()
            .start_execution(req, engine.now())
            .await
            .expect("start")
        {
            sluice_store::StartOutcome::Started(e) => ids.push(e.id),
            other => panic!("unexpected start outcome {other:?}"),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ext_log = Arc::new(Mutex::new(ExternalLog::default()));
    let tag = format!("chaos-{}", knobs.seed);
    let pace = knobs.min_duration.mul_f64(0.8) / (knobs.executions - half) as u32;
    let starter = tokio::spawn(start_over_api(
        api.clone(),
        half,
        knobs.executions,
        tag,
        pace,
    ));
    let mut helpers = vec![tokio::spawn(approver(api.clone(), stop.clone()))];
    for w in 0..2 {
        helpers.push(tokio::spawn(external_worker(
            api.clone(),
            format!("ext-{w}"),
            ext_log.clone(),
            stop.clone(),
        )));
    }
    helpers.push(tokio::spawn(replayer(
        api.clone(),
        ext_log.clone(),
        stop.clone(),
    )));

    // The chaos: a SIGKILL every `kill_every`; Redis restarted when a share of the
    // executions has ended (or a share of the deadline has gone by).
    let began = Instant::now();
    let mut rng = Rng(knobs.seed);
    let mut redis_restarts = 0;
    let mut redis_down = Duration::ZERO;
    let mut redis_down_since: Option<Instant> = None;
    let mut last_progress = (0usize, Instant::now());
    loop {
        tokio::time::sleep(knobs.kill_every).await;
        let (ended, live) = progress(&engine)
            .await
            .unwrap_or((last_progress.0, usize::MAX));
        if ended != last_progress.0 {
            last_progress = (ended, Instant::now());
        }
        let elapsed = began.elapsed();
        if starter.is_finished()
            && live == 0
            && ended >= knobs.executions
            && elapsed >= knobs.min_duration
            && redis_restarts == knobs.redis_restarts
            && redis_down_since.is_none()
        {
            break;
        }
        assert!(
            elapsed < knobs.deadline,
            "{ended} of {} executions ended after {elapsed:?}; last progress {:?} ago\n{}",
            knobs.executions,
            last_progress.1.elapsed(),
            diagnostics(&cluster, &engine).await
        );
        // Redis goes down for REDIS_DOWN (the kills go on meanwhile, so processes start
        // without a Redis), then comes back from its AOF.
        if let Some(since) = redis_down_since.filter(|since| since.elapsed() >= REDIS_DOWN) {
            let redis = &mut cluster.setup.redis;
            tokio::task::block_in_place(|| redis.restart());
            redis_down += since.elapsed();
            redis_down_since = None;
            eprintln!(
                "chaos: Redis back ({redis_restarts}) at {:?}",
                began.elapsed()
            );
        }
        let due = (redis_restarts + 1) as f64 / (knobs.redis_restarts + 1) as f64;
        if redis_restarts < knobs.redis_restarts
            && redis_down_since.is_none()
            && elapsed >= knobs.min_duration.mul_f64(due)
            && (ended as f64 >= due * knobs.executions as f64
                || elapsed.as_secs_f64() >= due * knobs.deadline.as_secs_f64() * 0.5)
        {
            cluster.setup.redis.kill();
            redis_down_since = Some(Instant::now());
            redis_restarts += 1;
            eprintln!(
                "chaos: Redis killed ({redis_restarts}) at {elapsed:?}, {ended} executions ended"
            );
        }
        let victim = rng.below(cluster.roles.len());
        cluster.kill_and_restart(victim);
    }
    let chaos_time = began.elapsed();
    let mut ids_api = starter.await.expect("starter");
    ids.append(&mut ids_api);
    eprintln!(
        "chaos: {} executions ended in {chaos_time:.1?} with {} SIGKILLs and {redis_restarts} Redis restarts ({redis_down:.1?} down)",
        knobs.executions,
        cluster.kills()
    );

    // Every process came back and stays up: the API is ready and the workers are registered.
    cluster.revive();
    wait_for_api(&api).await;
    let self_exits: Vec<String> = cluster
        .roles
        .iter()
        .flat_map(|r| r.self_exits.iter().map(move |e| format!("{}: {e}", r.name)))
        .collect();

    // Stop the schedules, replay every applied result once more, and let everything settle.
    for id in &schedules {
        let a = persist(|| {
            client
                .patch(format!("{api}/v1/schedules/{id}"))
                .bearer_auth(USER)
                .json(&json!({"enabled": false}))
        })
        .await
        .expect("disable schedule");
        assert_eq!(a.status, 200, "disable schedule {id}: {a:?}");
    }
    replay_all(&api, &ext_log).await;
    stop.store(true, Ordering::Relaxed);
    for h in helpers {
        h.await.expect("helper task");
    }
    let mut conn = cluster.setup.raw();
    let ticks = pipeline_executions(&mut conn, TICK_PIPELINE_ID);
    wait_until(
        Duration::from_secs(60),
        "the scheduled executions to end",
        || async {
            let mut conn = cluster.setup.raw();
            ticks
                .iter()
                .all(|id| !execution_doc(&mut conn, id).status.is_live())
                .then_some(())
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "no job leased or queued",
        || async {
            let mut conn = cluster.setup.raw();
            (leased_count(&mut conn) == 0 && queued_jobs(&mut conn).is_empty()).then_some(())
        },
    )
    .await;

    // The invariant checker (the helpers are done: their log is taken out of its lock).
    let ext = std::mem::take(&mut *ext_log.lock().expect("log"));
    let report = check(&mut conn, &knobs, &ids, &schedules, &ext, &api).await;
    let workers_alive = registered_workers(&engine, &cluster).await;
    eprintln!(
        "chaos: checked {} executions, {} scheduled ones, {} external results; {}",
        ids.len(),
        ticks.len(),
        ext.applied().len(),
        report.summary
    );
    let mut problems = report.problems;
    if !self_exits.is_empty() {
        problems.push(format!("processes exited by themselves: {self_exits:#?}"));
    }
    if workers_alive < 3 {
        problems.push(format!(
            "only {workers_alive} of the 3 worker processes are registered at the end"
        ));
    }
    for r in &mut cluster.roles {
        let log = std::fs::read_to_string(cluster.setup.log(&r.name)).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            problems.push(format!("{} panicked: {line}", r.name));
        }
        // What went wrong on the way (not a failure by itself: Redis was down on purpose).
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for line in log
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let key = format!(
                "{} {}",
                v["level"].as_str().unwrap_or("?"),
                v["message"].as_str().unwrap_or(line)
            );
            *errors.entry(key).or_default() += 1;
        }
        eprintln!("chaos: {} logged {errors:?}", r.name);
        if !r.child.is_running() {
            problems.push(format!(
                "{} is not running at the end: {}",
                r.name,
                cluster.setup.log_tail(&r.name, 10)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} invariant violations:\n{}",
        problems.len(),
        problems.join("\n")
    );
    for r in &mut cluster.roles {
        r.child.kill();
    }
}

/// Executions that ended (completed, failed, cancelled) and live ones, or `None` while
/// Redis is down. Scheduled executions count too: the chaos ends on a moment when none of
/// them is live either.
async fn progress(engine: &Engine) -> Option<(usize, usize)> {
    let counts = engine.store().execution_counts().await.ok()?;
    let sum = |live: bool| {
        counts
            .iter()
            .filter(|(s, _)| s.is_live() == live)
            .map(|(_, n)| *n as usize)
            .sum()
    };
    Some((sum(false), sum(true)))
}

/// What the state looks like when the run is stuck: counts, and the end of each log.
async fn diagnostics(cluster: &Cluster, engine: &Engine) -> String {
    let counts = engine
        .store()
        .execution_counts()
        .await
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|e| e.to_string());
    let mut out = format!("execution counts: {counts}\n");
    for r in &cluster.roles {
        out.push_str(&format!(
            "--- {} ({} kills) ---\n{}\n",
            r.name,
            r.kills,
            cluster.setup.log_tail(&r.name, 8)
        ));
    }
    out
}

/// How many of the three current worker processes are registered with a fresh heartbeat.
async fn registered_workers(engine: &Engine, cluster: &Cluster) -> usize {
    let pids: HashSet<u32> = cluster
        .roles
        .iter()
        .filter(|r| r.role == "worker")
        .map(|r| r.child.pid())
        .collect();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = engine
            .store()
            .workers(engine.now())
            .await
            .unwrap_or_default();
        let found = workers.iter().filter(|w| pids.contains(&w.pid)).count();
        if found == pids.len() || Instant::now() >= until {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checker's findings.
struct Report {
    problems: Vec<String>,
    summary: String,
}

/// Verifies every invariant on the final state; collects every violation (at most a few
/// of each kind are spelled out).
async fn check(
    conn: &mut RawConn,
    knobs: &Knobs,
    ids: &[String],
    schedules: &[String],
    ext: &ExternalLog,
    api: &str,
) -> Report {
    let mut problems = Vec::new();
    let mut note = |what: &str, detail: String| problems.push(format!("{what}: {detail}"));
    let stream = events(conn);
    let by_exec = group_by(&stream, "execution_id");
    let by_job = group_by(&stream, "job_id");

    // 1. Exactly the started executions exist, each input once, each with its expected end.
    let all = pipeline_executions(conn, PIPELINE_ID);
    if all.len() != knobs.executions
        || pipeline_execution_count(conn, PIPELINE_ID) != knobs.executions
    {
        note(
            "executions",
            format!("{} exist for {} started", all.len(), knobs.executions),
        );
    }
    let mut seen_n = HashSet::new();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut docs = Vec::new();
    for id in ids {
        let e = execution_doc(conn, id);
        let n = e.input["n"].as_u64().expect("n");
        if !seen_n.insert(n) {
            note("duplicate input", format!("n = {n} started twice ({id})"));
        }
        let want = expected(n);
        let fine = match want {
            Expected::Completed => e.status == ExecutionStatus::Completed,
            Expected::GateFails => failed_at(&e, FailureKind::JobFailed, "check"),
            Expected::ExternalFails => failed_at(&e, FailureKind::JobFailed, "ext"),
            Expected::Rejected => failed_at(&e, FailureKind::Rejected, "ok"),
        };
        *outcomes
            .entry(if fine { "as expected" } else { "unexpected" })
            .or_default() += 1;
        if !fine {
            note(
                "wrong end",
                format!(
                    "{id} (n = {n}) expected {want:?}, is {:?} {:?}",
                    e.status, e.failure
                ),
            );
        }
        if e.run != 1 {
            note("runs", format!("{id} is at run {}", e.run));
        }
        docs.push((n, e));
    }

    // 2. The chain of outputs, and each step completed once.
    for (n, e) in &docs {
        let (first, second, ext_v) = chain(*n);
        let want: [(usize, Value); 4] = [
            (0, json!({"v": first})),
            (3, json!({"v": second})),
            (4, json!({"v": ext_v})),
            (6, json!({"v": ext_v, "n": n})),
        ];
        for (i, value) in want {
            let step = &e.steps[i];
            if step.status == StepStatus::Succeeded && step.output.as_ref() != Some(&value) {
                note(
                    "output",
                    format!(
                        "{} step {} output {:?}, expected {value}",
                        e.id, STEPS[i], step.output
                    ),
                );
            }
        }
        let evs = by_exec
            .get(e.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut completions: HashMap<u64, usize> = HashMap::new();
        for ev in evs
            .iter()
            .filter(|ev| ev.kind == "execution.step.completed")
        {
            *completions
                .entry(ev.data["step"].as_u64().expect("step"))
                .or_default() += 1;
        }
        for (i, step) in e.steps.iter().enumerate() {
            let count = completions.get(&(i as u64)).copied().unwrap_or(0);
            let want = usize::from(step.status == StepStatus::Succeeded);
            if count != want {
                note(
                    "step completions",
                    format!(
                        "{} step {} ({:?}) has {count} completion events",
                        e.id, STEPS[i], step.status
                    ),
                );
            }
        }
        check_execution_events(e, evs, &mut note);
    }

    // 3. Jobs: none left running or pending; each job's events agree with its status.
    let mut job_statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (job, evs) in &by_job {
        let status = job_status(conn, job).unwrap_or_else(|| "missing".into());
        *job_statuses.entry(status.clone()).or_default() += 1;
        let settles: Vec<&str> = evs
            .iter()
            .map(|e| e.kind.as_str())
            .filter(|k| matches!(*k, "job.completed" | "job.failed" | "job.cancelled"))
            .collect();
        let completed = settles.iter().filter(|k| **k == "job.completed").count();
        let consistent = match status.as_str() {
            "completed" => completed == 1 && settles.last() == Some(&"job.completed"),
            "failed" => completed == 0 && settles.last() == Some(&"job.failed"),
            "cancelled" => completed == 0 && settles.last() == Some(&"job.cancelled"),
            _ => false,
        };
        if !consistent {
            note(
                "job",
                format!("{job} is {status} with settle events {settles:?}"),
            );
        }
    }
    let queued = queued_jobs(conn);
    if !queued.is_empty() {
        note("queues", format!("jobs left queued: {queued:?}"));
    }
    if leased_count(conn) != 0 {
        note("leases", format!("{} jobs left leased", leased_count(conn)));
    }

    // 4. External results: each applied once, replays answered the first answer.
    let mut applied_keys: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut first_answer: HashMap<&str, &Answer> = HashMap::new();
    let mut fresh: HashMap<&str, usize> = HashMap::new();
    for (post, a) in &ext.answers {
        if a.status == 200 {
            applied_keys.entry(&post.job).or_default().insert(&post.key);
            if !a.replayed {
                *fresh.entry(&post.key).or_default() += 1;
            }
            first_answer.entry(&post.key).or_insert(a);
        } else if a.status != 409 {
            note(
                "result post",
                format!(
                    "{} key {} answered {} {}",
                    post.job, post.key, a.status, a.body
                ),
            );
        }
    }
    for (job, keys) in &applied_keys {
        if keys.len() > 1 {
            note(
                "double application",
                format!("{job} took results under keys {keys:?}"),
            );
        }
    }
    for (key, count) in &fresh {
        if *count > 1 {
            note(
                "double application",
                format!("key {key} was applied {count} times (not replayed)"),
            );
        }
    }
    for (post, a) in &ext.replays {
        let same = first_answer
            .get(post.key.as_str())
            .is_some_and(|f| f.body == a.body);
        if a.status != 200 || !a.replayed || !same {
            note(
                "replay",
                format!(
                    "{} key {} answered {} replayed={} {}",
                    post.job, post.key, a.status, a.replayed, a.body
                ),
            );
        }
    }
    for (post, a) in ext.foreign.iter().chain(&ext.stale) {
        if a.status != 409 {
            note(
                "late or foreign result",
                format!(
                    "{} key {} answered {} {}",
                    post.job, post.key, a.status, a.body
                ),
            );
        }
    }
    if !ext.unanswered.is_empty() {
        note(
            "result post",
            format!("{} posts got no answer in 2 minutes", ext.unanswered.len()),
        );
    }
    for (n, e) in &docs {
        let step = &e.steps[4];
        let Some(job) = step.job_id.as_deref() else {
            continue;
        };
        let applied = applied_keys.contains_key(job);
        if step.status == StepStatus::Succeeded && !applied {
            note(
                "external",
                format!("{} (n = {n}) ext succeeded without an applied post", e.id),
            );
        }
    }

    // 5. Schedules: each due time fired once, each fire one execution of its own.
    let mut fires = 0;
    let client = http_client();
    let mut fired_execs = HashSet::new();
    for id in schedules {
        let a = persist(|| {
            client
                .get(format!("{api}/v1/schedules/{id}/runs?limit=200"))
                .bearer_auth(USER)
        })
        .await
        .expect("schedule runs");
        let rows = a.body["items"].as_array().cloned().unwrap_or_default();
        let mut due: HashMap<i64, usize> = HashMap::new();
        let mut dues = Vec::new();
        for row in rows.iter().filter(|r| r["trigger"] == "schedule") {
            let at = row["due_at"].as_i64().expect("due_at");
            if row["status"] == "skipped" {
                note(
                    "schedule",
                    format!("{id} skipped its fire due at {at}: {row}"),
                );
                continue;
            }
            *due.entry(at).or_default() += 1;
            dues.push((at, row["missed"].as_u64().unwrap_or(0)));
            match row["execution_id"].as_str() {
                Some(ex) if fired_execs.insert(ex.to_string()) => {
                    let e = execution_doc(conn, ex);
                    if e.status != ExecutionStatus::Completed
                        || e.steps[0].output != Some(json!({"s": e.input["s"]}))
                    {
                        note(
                            "schedule",
                            format!(
                                "{id}'s execution {ex} is {:?} with input {}",
                                e.status, e.input
                            ),
                        );
                    }
                }
                other => note(
                    "schedule",
                    format!("{id} row due {at} has execution {other:?} (missing or shared)"),
                ),
            }
        }
        fires += due.len();
        for (at, count) in &due {
            if *count != 1 {
                note(
                    "schedule",
                    format!("{id} fired {count} times for the time due at {at}"),
                );
            }
            if at % 60_000 != 0 {
                note(
                    "schedule",
                    format!("{id} due time {at} is not a whole minute"),
                );
            }
        }
        dues.sort_unstable();
        for w in dues.windows(2) {
            let gap = (w[1].0 - w[0].0) / 60_000;
            if gap != 1 && w[1].1 == 0 {
                note(
                    "schedule",
                    format!(
                        "{id} skipped {} due minutes between {} and {} with missed = 0",
                        gap - 1,
                        w[0].0,
                        w[1].0
                    ),
                );
            }
        }
        let event_fires: Vec<&RawEvent> = stream
            .iter()
            .filter(|e| {
                e.kind == "schedule.fired"
                    && e.data["schedule_id"] == json!(id)
                    && e.data["trigger"] == "schedule"
            })
            .collect();
        if event_fires.len() != due.len() {
            note(
                "schedule",
                format!(
                    "{id} has {} schedule.fired events for {} fires",
                    event_fires.len(),
                    due.len()
                ),
            );
        }
        if due.is_empty() {
            note("schedule", format!("{id} never fired"));
        }
    }
    let tick_execs = pipeline_execution_count(conn, TICK_PIPELINE_ID);
    if tick_execs != fired_execs.len() {
        note(
            "schedule",
            format!(
                "{tick_execs} scheduled executions exist for {} fires",
                fired_execs.len()
            ),
        );
    }

    let reclaimed = stream
        .iter()
        .filter(|e| e.kind == "job.failed" && e.data.to_string().contains("lease expired"))
        .count();
    if reclaimed == 0 {
        note(
            "chaos",
            "no running job was ever killed: the run proved nothing".into(),
        );
    }
    let summary = format!(
        "outcomes {outcomes:?}; jobs {job_statuses:?}; {reclaimed} killed attempts reclaimed; {fires} schedule fires; external: {} leased, {} posts, {} replays, {} foreign, {} stale, {} abandoned at the end",
        ext.leased,
        ext.answers.len(),
        ext.replays.len(),
        ext.foreign.len(),
        ext.stale.len(),
        ext.abandoned.len()
    );
    Report { problems, summary }
}

/// Whether `e` failed with `kind` at step `step`.
fn failed_at(e: &Execution, kind: FailureKind, step: &str) -> bool {
    e.status == ExecutionStatus::Failed
        && e.failure
            .as_ref()
            .is_some_and(|f| f.kind == kind && f.step.as_deref() == Some(step))
}

/// The execution's events agree with its final state: its last terminal event matches its
/// status, one `execution.completed` when completed, none otherwise.
fn check_execution_events(e: &Execution, evs: &[&RawEvent], note: &mut impl FnMut(&str, String)) {
    let terminal: Vec<&str> = evs
        .iter()
        .map(|ev| ev.kind.as_str())
        .filter(|k| {
            matches!(
                *k,
                "execution.completed" | "execution.failed" | "execution.cancelled"
            )
        })
        .collect();
    let want = match e.status {
        ExecutionStatus::Completed => "execution.completed",
        ExecutionStatus::Failed => "execution.failed",
        ExecutionStatus::Cancelled => "execution.cancelled",
        other => {
            note("events", format!("{} is still {other:?}", e.id));
            return;
        }
    };
    if terminal.len() != 1 || terminal[0] != want {
        note(
            "events",
            format!(
                "{} is {:?} with terminal events {terminal:?}",
                e.id, e.status
            ),
        );
    }
    if evs.first().map(|ev| ev.kind.as_str()) != Some("execution.started") {
        note(
            "events",
            format!("{} does not begin with execution.started", e.id),
        );
    }
}

/// The events that carry `field`, grouped by its value.
fn group_by<'a>(stream: &'a [RawEvent], field: &str) -> HashMap<&'a str, Vec<&'a RawEvent>> {
    let mut out: HashMap<&str, Vec<&RawEvent>> = HashMap::new();
    for e in stream {
        if let Some(v) = e.data[field].as_str() {
            out.entry(v).or_default().push(e);
        }
    }
    out
}
