//! The `http` step, the gate probes and an `http` step run by a real worker, against a local
//! HTTP server (axum on a loopback port).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_core::execution::StartRequest;
use sluice_core::job::{JobError, Outcome};
use sluice_core::{ExecutionStatus, Millis, Pipeline, StepStatus, SystemClock};
use sluice_store::engine::Engine;
use sluice_store::{StartOutcome, Store, StoreConfig};
use sluice_testkit::{RedisServer, TlsServer, wait_until};
use sluice_worker::command::CommandSpec;
use sluice_worker::gate::{self, HttpProbe};
use sluice_worker::http::{self, HttpClient, PostSpec};
use sluice_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// A request the test server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A local server answering by path, recording every request; over plain HTTP, or over
/// HTTPS under a self-signed certificate.
struct TestServer {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    tls: Option<TlsServer>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl TestServer {
    fn app(seen: &Arc<Mutex<Vec<Seen>>>) -> axum::Router {
        let record = seen.clone();
        axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    let path = uri.path().to_string();
                    record.lock().unwrap().push(Seen {
                        method,
                        path: path.clone(),
                        headers,
                        body: body.to_vec(),
                    });
                    answer(&path, &body).await
                }
            },
        )
    }

    async fn start() -> TestServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Self::app(&seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            base: format!("http://{addr}"),
            seen,
            task: Some(task),
            tls: None,
        }
    }

    async fn start_tls() -> TestServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tls = TlsServer::start(Self::app(&seen)).await;
        TestServer {
            base: tls.url(""),
            seen,
            task: None,
            tls: Some(tls),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn tls(&self) -> &TlsServer {
        self.tls.as_ref().expect("an https server")
    }

    /// A file holding the certificate of this https server, for `ca_file`.
    fn ca_file(&self) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), self.tls().cert_pem()).unwrap();
        file
    }
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn answer(path: &str, body: &[u8]) -> Response {
    match path {
        "/json" => {
            let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            json_answer(
                StatusCode::OK,
                json!({"deployed": "v2", "input_x": sent["input"]["x"]}),
            )
        }
        "/text" => (StatusCode::OK, "deployed v2\n").into_response(),
        "/empty" => StatusCode::OK.into_response(),
        "/unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response(),
        "/bad" => (
            StatusCode::BAD_REQUEST,
            format!("missing field `sha`{}", "!".repeat(1000)),
        )
            .into_response(),
        "/accepted" => (StatusCode::ACCEPTED, "queued").into_response(),
        "/redirect" => (
            StatusCode::FOUND,
            [("location", "http://elsewhere.test/x?token=abc")],
        )
            .into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(20)).await;
            StatusCode::OK.into_response()
        }
        "/probe/pass" => json_answer(
            StatusCode::OK,
            json!({"verdict": "pass", "summary": "all 12 checks green"}),
        ),
        "/probe/pending" => json_answer(
            StatusCode::OK,
            json!({"verdict": "pending", "summary": "3 running"}),
        ),
        "/probe/fail" => json_answer(
            StatusCode::OK,
            json!({"verdict": "fail", "summary": "lint failed"}),
        ),
        "/probe/garbage" => (StatusCode::OK, "<html>status page</html>").into_response(),
        "/probe/maybe" => json_answer(StatusCode::OK, json!({"verdict": "maybe"})),
        "/probe/down" => (StatusCode::INTERNAL_SERVER_ERROR, "db down").into_response(),
        "/deploy/abc123" => {
            let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            json_answer(
                StatusCode::OK,
                json!({"deployed": sent["steps"]["build"]["output"]["sha"], "by": sent["job"]["id"]}),
            )
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The time a test's 202 is counted from.
const NOW: Millis = 1_700_000_000_000;

fn post_spec(url: String) -> PostSpec {
    let context = json!({"execution": {"id": "ex_1"}, "input": {"x": 7}, "steps": {}});
    PostSpec {
        url,
        headers: BTreeMap::from([("Authorization".to_string(), "Bearer s3cret".to_string())]),
        body: http::step_body(context, "job_0_a", 2, "lease-tok"),
        job_id: "job_0_a".into(),
        attempt: 2,
        lease_token: "lease-tok".into(),
        timeout: Duration::from_secs(5),
        result_timeout: Duration::from_secs(90),
    }
}

async fn post(spec: &PostSpec) -> Outcome {
    post_with(&HttpClient::new(None).unwrap(), spec).await
}

async fn post_with(client: &HttpClient, spec: &PostSpec) -> Outcome {
    client.post(spec, &CancellationToken::new(), &|| NOW).await
}

fn failure(outcome: Outcome) -> JobError {
    match outcome {
        Outcome::Failed(error) => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_json_answer_completes_with_its_body_and_the_request_carries_context_job_and_headers() {
    let server = TestServer::start().await;
    let outcome = post(&post_spec(server.url("/json"))).await;
    assert_eq!(
        outcome,
        Outcome::Completed(json!({"deployed": "v2", "input_x": 7}))
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.header("idempotency-key"), Some("job_0_a.2"));
    assert_eq!(req.header("sluice-job-id"), Some("job_0_a"));
    assert_eq!(req.header("sluice-attempt"), Some("2"));
    assert_eq!(req.header("sluice-lease-token"), Some("lease-tok"));
    assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "execution": {"id": "ex_1"}, "input": {"x": 7}, "steps": {},
            "job": {"id": "job_0_a", "attempt": 2, "token": "lease-tok"},
        })
    );
}

#[tokio::test]
async fn a_text_answer_becomes_a_string_and_an_empty_one_null() {
    let server = TestServer::start().await;
    assert_eq!(
        post(&post_spec(server.url("/text"))).await,
        Outcome::Completed(json!("deployed v2\n"))
    );
    assert_eq!(
        post(&post_spec(server.url("/empty"))).await,
        Outcome::Completed(Value::Null)
    );
}

#[tokio::test]
async fn a_5xx_answer_is_a_retryable_failure() {
    let server = TestServer::start().await;
    let error = failure(post(&post_spec(server.url("/unavailable"))).await);
    assert!(error.retryable);
    assert_eq!(
        error.message,
        format!(
            "POST {} answered 503 Service Unavailable: try again later",
            server.url("/unavailable")
        )
    );
}

#[tokio::test]
async fn a_4xx_answer_is_a_terminal_failure_quoting_the_start_of_the_body() {
    let server = TestServer::start().await;
    let error = failure(post(&post_spec(server.url("/bad"))).await);
    let quoted = "missing field `sha`";
    let rest = "!".repeat(http::EXCERPT_CHARS - quoted.len());
    let url = server.url("/bad");
    let want = format!("POST {url} answered 400 Bad Request: {quoted}{rest}…");
    assert_eq!((error.message, error.retryable), (want, false));
}

#[tokio::test]
async fn a_202_answer_defers_the_result_until_the_result_timeout() {
    let server = TestServer::start().await;
    assert_eq!(
        post(&post_spec(server.url("/accepted"))).await,
        Outcome::Deferred {
            deadline: NOW + 90_000
        }
    );
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_a_retryable_failure() {
    let server = TestServer::start().await;
    let mut spec = post_spec(server.url("/slow"));
    spec.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = failure(post(&spec).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.retryable);
    assert_eq!(
        error.message,
        format!("POST {}: timed out after 300ms", server.url("/slow"))
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = failure(post(&post_spec(format!("http://{addr}/x"))).await);
    assert!(error.retryable, "{error:?}");
    assert!(
        error
            .message
            .starts_with(&format!("POST http://{addr}/x: ")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn sluice_headers_win_over_headers_of_the_step() {
    let server = TestServer::start().await;
    let mut spec = post_spec(server.url("/json"));
    spec.headers
        .insert("Idempotency-Key".into(), "spoofed".into());
    spec.headers
        .insert("Sluice-Lease-Token".into(), "spoofed".into());
    spec.headers.insert("X-Trace".into(), "t-1".into());
    assert!(matches!(post(&spec).await, Outcome::Completed(_)));
    let req = &server.seen()[0];
    assert_eq!(req.header("idempotency-key"), Some("job_0_a.2"));
    assert_eq!(req.header("sluice-lease-token"), Some("lease-tok"));
    assert_eq!(req.header("x-trace"), Some("t-1"));
}

#[tokio::test]
async fn redirects_are_not_followed_and_fail_for_good() {
    let server = TestServer::start().await;
    let outcome = post(&post_spec(server.url("/redirect"))).await;
    let to = "http://elsewhere.test/x";
    let why = format!("answered 302 Found (redirects are not followed; Location: {to})");
    let message = format!("POST {} {why}", server.url("/redirect"));
    assert_eq!(outcome, Outcome::Failed(JobError::terminal(message)));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn unusable_urls_and_headers_fail_for_good_without_sending() {
    let ftp = failure(post(&post_spec("ftp://deployer.test/deploy".into())).await);
    assert!(!ftp.retryable);
    assert!(
        ftp.message
            .ends_with("URL scheme `ftp` is not supported; use http:// or https://"),
        "{}",
        ftp.message
    );
    let server = TestServer::start().await;
    let mut spec = post_spec(server.url("/json"));
    spec.headers.insert("Bad Name".into(), "x".into());
    let error = failure(post(&spec).await);
    assert!(!error.retryable);
    assert!(
        error
            .message
            .ends_with("`Bad Name` is not a valid header name"),
        "{}",
        error.message
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn an_https_endpoint_with_an_untrusted_certificate_is_a_retryable_failure() {
    let server = TestServer::start_tls().await;
    let url = server.url("/json");
    let error = failure(post(&post_spec(url.clone())).await);
    assert!(error.retryable, "{error:?}");
    assert!(
        error.message.starts_with(&format!("POST {url}: ")),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with(
            "the server's TLS certificate was refused (invalid peer certificate: \
             UnknownIssuer); if a private certificate authority signed it, add that \
             authority to worker.ca_file"
        ),
        "{}",
        error.message
    );
    assert!(server.seen().is_empty());
    wait_until(
        Duration::from_secs(5),
        "the server to see the refused handshake",
        || async { (server.tls().failed_handshakes() > 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_https_endpoint_whose_certificate_is_in_the_ca_file_is_served() {
    let server = TestServer::start_tls().await;
    let ca_file = server.ca_file();
    let client = HttpClient::new(Some(ca_file.path())).unwrap();
    assert_eq!(
        post_with(&client, &post_spec(server.url("/json"))).await,
        Outcome::Completed(json!({"deployed": "v2", "input_x": 7}))
    );
    assert_eq!(
        run_http_probe_with(&client, &http_probe(server.url("/probe/pass"))).await,
        verdict("pass", json!("all 12 checks green"))
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("sluice-lease-token"), Some("lease-tok"));
    assert_eq!(seen[1].header("authorization"), Some("Bearer ci"));
    assert_eq!(server.tls().failed_handshakes(), 0);

    // The file adds to what is trusted; other certificates are still verified.
    let other = TestServer::start_tls().await;
    let error = failure(post_with(&client, &post_spec(other.url("/json"))).await);
    assert!(
        error.retryable && error.message.contains("certificate"),
        "{error:?}"
    );
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn cancellation_aborts_the_request() {
    let server = TestServer::start().await;
    let spec = post_spec(server.url("/slow"));
    let cancel = CancellationToken::new();
    let client = HttpClient::new(None).unwrap();
    let started = Instant::now();
    let (outcome, ()) = tokio::join!(client.post(&spec, &cancel, &|| NOW), async {
        wait_until(Duration::from_secs(10), "the request to arrive", || async {
            (!server.seen().is_empty()).then_some(())
        })
        .await;
        cancel.cancel();
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let error = failure(outcome);
    assert_eq!(
        (error.message.as_str(), error.retryable),
        ("cancelled", false)
    );
}

#[tokio::test]
async fn a_standalone_http_job_posts_its_body_as_is() {
    let server = TestServer::start().await;
    let job: sluice_core::Job = serde_json::from_value(json!({
        "id": "job_0_s", "queue": "default", "kind": "http",
        "payload": {"url": server.url("/json"), "headers": {"X-Who": "ops"}, "body": {"input": {"x": 3}}},
        "status": "running", "priority": 0, "attempts": 1, "retry": sluice_core::RetryPolicy::default(),
        "scheduled_at": 0, "created_at": 0, "updated_at": 0,
    }))
    .unwrap();
    let spec = http::standalone_spec(&job, "tok").unwrap();
    assert_eq!(
        post(&spec).await,
        Outcome::Completed(json!({"deployed": "v2", "input_x": 3}))
    );
    let req = &server.seen()[0];
    assert_eq!(req.json(), json!({"input": {"x": 3}}));
    assert_eq!(
        (req.header("x-who"), req.header("sluice-lease-token")),
        (Some("ops"), Some("tok"))
    );

    let mut bad = job.clone();
    bad.payload = json!({"url": server.url("/json"), "headers": {"X-N": 1}});
    assert_eq!(
        http::standalone_spec(&bad, "tok").unwrap_err(),
        "payload.headers must be an object of strings"
    );
    bad.payload = json!({"body": {}});
    assert_eq!(
        http::standalone_spec(&bad, "tok").unwrap_err(),
        "payload.url must be a string"
    );
}

fn probe_command(script: &str) -> CommandSpec {
    let mut spec = CommandSpec::new(["sh", "-c", script]);
    spec.kill_grace = Duration::from_millis(200);
    spec
}

async fn command_probe(script: &str) -> Outcome {
    gate::run_command_probe(probe_command(script), CancellationToken::new()).await
}

fn verdict(verdict: &str, summary: Value) -> Outcome {
    Outcome::Completed(json!({"verdict": verdict, "summary": summary}))
}

#[tokio::test]
async fn a_command_probe_passes_on_exit_0_with_the_summary_it_wrote() {
    let outcome =
        command_probe(r#"echo noise; printf '{"summary":"12 checks green"}' > "$SLUICE_OUTPUT""#)
            .await;
    assert_eq!(outcome, verdict("pass", json!("12 checks green")));
}

#[tokio::test]
async fn a_command_probe_is_pending_on_exit_75_with_the_last_line_it_printed() {
    let outcome = command_probe("echo checking; echo '  3 of 5 running  '; echo; exit 75").await;
    assert_eq!(outcome, verdict("pending", json!("3 of 5 running")));
}

#[tokio::test]
async fn a_command_probe_fails_on_any_other_exit_and_still_reads_its_output() {
    let outcome = command_probe(
        r#"echo 'lint: 3 errors'; printf '{"summary":"lint failed"}' > "$SLUICE_OUTPUT"; exit 1"#,
    )
    .await;
    assert_eq!(outcome, verdict("fail", json!("lint failed")));
    assert_eq!(
        command_probe("echo 'lint: 3 errors'; exit 2").await,
        verdict("fail", json!("lint: 3 errors"))
    );
    assert_eq!(command_probe("true").await, verdict("pass", Value::Null));
}

#[tokio::test]
async fn a_command_probe_caps_a_long_summary() {
    let Outcome::Completed(done) = command_probe("head -c 2000 /dev/zero | tr '\\0' x; echo").await
    else {
        panic!("no verdict")
    };
    let summary = done["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), gate::SUMMARY_CHARS + 1);
    assert!(summary.ends_with('…'));
}

#[tokio::test]
async fn a_command_probe_that_cannot_run_is_a_retryable_error() {
    let mut spec = probe_command("sleep 30");
    spec.timeout = Some(Duration::from_millis(200));
    let error = failure(gate::run_command_probe(spec, CancellationToken::new()).await);
    assert_eq!(
        (error.message.as_str(), error.retryable),
        ("probe: timed out after 200ms", true)
    );

    let missing = CommandSpec::new(["sluice-no-such-probe"]);
    let error = failure(gate::run_command_probe(missing, CancellationToken::new()).await);
    assert!(error.retryable);
    assert!(
        error
            .message
            .starts_with("probe: cannot start `sluice-no-such-probe`"),
        "{}",
        error.message
    );

    let error = failure(command_probe("kill -KILL $$").await);
    assert_eq!(
        (error.message.as_str(), error.retryable),
        ("probe: killed by signal 9", true)
    );
}

fn http_probe(url: String) -> HttpProbe {
    HttpProbe {
        url,
        headers: BTreeMap::from([("Authorization".to_string(), "Bearer ci".to_string())]),
        job_id: "job_0_p".into(),
        attempt: 4,
        timeout: Duration::from_secs(5),
    }
}

async fn run_http_probe(probe: &HttpProbe) -> Outcome {
    run_http_probe_with(&HttpClient::new(None).unwrap(), probe).await
}

async fn run_http_probe_with(client: &HttpClient, probe: &HttpProbe) -> Outcome {
    gate::run_http_probe(client, probe, &CancellationToken::new()).await
}

#[tokio::test]
async fn an_http_probe_reads_each_verdict_and_sends_its_headers() {
    let server = TestServer::start().await;
    let cases = [
        ("/probe/pass", "pass", "all 12 checks green"),
        ("/probe/pending", "pending", "3 running"),
        ("/probe/fail", "fail", "lint failed"),
    ];
    for (path, want, summary) in cases {
        assert_eq!(
            run_http_probe(&http_probe(server.url(path))).await,
            verdict(want, json!(summary)),
            "{path}"
        );
    }
    let req = &server.seen()[0];
    assert_eq!(req.method, Method::GET);
    assert_eq!(req.path, "/probe/pass");
    assert_eq!(req.header("authorization"), Some("Bearer ci"));
    assert_eq!(
        (req.header("sluice-job-id"), req.header("sluice-attempt")),
        (Some("job_0_p"), Some("4"))
    );
    assert!(req.body.is_empty());
}

#[tokio::test]
async fn an_http_probe_without_a_readable_verdict_is_a_retryable_error() {
    let server = TestServer::start().await;
    let cases = [
        (
            "/probe/garbage",
            "answered 200 OK with a body that is not JSON",
        ),
        (
            "/probe/maybe",
            "answered verdict `maybe`; expected pass, pending or fail",
        ),
        ("/probe/down", "answered 500 Internal Server Error: db down"),
    ];
    for (path, why) in cases {
        let error = failure(run_http_probe(&http_probe(server.url(path))).await);
        assert!(error.retryable, "{path}");
        let prefix = format!("probe GET {} {why}", server.url(path));
        assert!(
            error.message.starts_with(&prefix),
            "{path}: {}",
            error.message
        );
    }
    let mut slow = http_probe(server.url("/slow"));
    slow.timeout = Duration::from_millis(200);
    let error = failure(run_http_probe(&slow).await);
    assert_eq!(
        error.message,
        format!("probe GET {}: timed out after 200ms", server.url("/slow"))
    );
    assert!(error.retryable);
}

/// A worker runs a pipeline whose `http` step gets its URL and a header from the previous
/// step's output, and records the answer as the step's output.
#[tokio::test]
async fn a_worker_runs_an_http_step_between_two_other_steps() {
    let server = TestServer::start().await;
    run_deploy_pipeline(&server, WorkerConfig::default()).await;
}

/// The same over https, the server's certificate trusted through the worker's `ca_file`.
#[tokio::test]
async fn a_worker_runs_an_https_step_trusting_its_ca_file() {
    let server = TestServer::start_tls().await;
    let ca_file = server.ca_file();
    let config = WorkerConfig {
        ca_file: Some(ca_file.path().to_path_buf()),
        ..WorkerConfig::default()
    };
    run_deploy_pipeline(&server, config).await;
}

/// Runs `build` (a command printing a sha), `deploy` (an `http` step to `server`, its URL
/// and a header rendered from that sha) and `done` with a worker of `config`, and checks
/// what `server` received and what the execution recorded.
///
/// The pipeline is read from its canonical JSON form (the form the store keeps).
async fn run_deploy_pipeline(server: &TestServer, config: WorkerConfig) {
    let redis = RedisServer::start();
    let store = StoreConfig {
        url: redis.url(),
        ..StoreConfig::default()
    };
    let engine = Engine::new(Store::connect(store).await.unwrap(), Arc::new(SystemClock));
    let retry = sluice_core::RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    };
    let pipeline: Pipeline = serde_json::from_value(json!({
        "id": "deploy", "name": "deploy",
        "steps": [
            {"name": "build", "queue": "default", "retry": retry, "kind": "command",
             "run": ["sh", "-c", "printf '{\"sha\":\"abc123\"}' > \"$SLUICE_OUTPUT\""]},
            {"name": "deploy", "queue": "default", "retry": retry, "kind": "http", "timeout_ms": 5000,
             "url": server.url("/deploy/{{ steps.build.output.sha }}"),
             "headers": {"X-Sha": "{{ steps.build.output.sha }}"}},
            {"name": "done", "queue": "default", "retry": retry, "kind": "noop"},
        ],
    }))
    .unwrap();
    let (version, _) = engine
        .store()
        .put_pipeline(&pipeline, engine.now())
        .await
        .unwrap();
    let req = StartRequest {
        pipeline,
        pipeline_version: version,
        input: json!({}),
        target: None,
        idempotency_key: None,
    };
    let StartOutcome::Started(exec) = engine
        .store()
        .start_execution(req, engine.now())
        .await
        .unwrap()
    else {
        panic!("not started")
    };

    let worker = Worker::new(engine.clone(), config).unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone().cancelled_owned()));

    let exec = wait_until(
        Duration::from_secs(30),
        "the execution to settle",
        || async {
            let e = engine
                .store()
                .get_execution(&exec.id)
                .await
                .unwrap()
                .unwrap();
            (!e.status.is_live()).then_some(e)
        },
    )
    .await;
    assert_eq!(exec.status, ExecutionStatus::Completed, "{exec:#?}");
    assert!(exec.steps.iter().all(|s| s.status == StepStatus::Succeeded));
    let job_id = exec.steps[1].job_id.clone().unwrap();
    assert_eq!(
        exec.steps[1].output,
        Some(json!({"deployed": "abc123", "by": job_id}))
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/deploy/abc123");
    assert_eq!(req.header("x-sha"), Some("abc123"));
    assert_eq!(
        req.header("idempotency-key"),
        Some(format!("{job_id}.1").as_str())
    );
    let body = req.json();
    assert_eq!(body["execution"]["id"], json!(exec.id));
    assert_eq!(body["execution"]["step"], json!("deploy"));
    assert_eq!(body["job"]["attempt"], json!(1));
    assert_eq!(
        Some(body["job"]["token"].as_str().unwrap()),
        req.header("sluice-lease-token")
    );
    stop.cancel();
    handle.await.unwrap();
}
