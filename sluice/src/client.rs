//! Client commands: they call the HTTP API (so validation lives in one place).
//!
//! Exit codes: 0 ok, 1 the operation was refused (the problem's `code` is printed), 2 usage
//! error (from clap), 3 the API cannot be reached.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_worker::http::error_chain;
use sluice_worker::tls::{self, Roots};

/// A refused operation or an unreachable API, mapped to an exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The API answered with a problem.
    Refused {
        /// HTTP status.
        status: u16,
        /// Problem body.
        problem: Value,
    },
    /// The API cannot be reached.
    Unreachable(String),
    /// Local input is wrong (file, JSON).
    Input(String),
}

impl ClientError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused { .. } | ClientError::Input(_) => 1,
            ClientError::Unreachable(_) => 3,
        }
    }

    /// Prints the error for humans (stderr).
    pub fn report(&self) {
        match self {
            ClientError::Refused { status, problem } => {
                let code = problem.get("code").and_then(Value::as_str).unwrap_or("ERROR");
                let detail = problem
                    .get("detail")
                    .and_then(Value::as_str)
                    .or_else(|| problem.get("title").and_then(Value::as_str))
                    .unwrap_or("");
                eprintln!("error: {code} ({status}): {detail}");
                if let Some(hint) = hint(code) {
                    eprintln!("hint: {hint}");
                }
                if let Some(problems) = problem.get("problems").and_then(Value::as_array) {
                    for p in problems {
                        let field = p.get("field").and_then(Value::as_str).unwrap_or("");
                        let message = p.get("message").and_then(Value::as_str).unwrap_or("");
                        eprintln!("  {field}: {message}");
                    }
                }
            }
            ClientError::Unreachable(e) => eprintln!("error: cannot reach the sluice API: {e}"),
            ClientError::Input(e) => eprintln!("error: {e}"),
        }
    }
}

/// What to do about a refusal with this problem `code`, when the CLI can say.
fn hint(code: &str) -> Option<&'static str> {
    match code {
        "UNAUTHORIZED" => Some("the API needs a bearer token: pass --token or set SLUICE_TOKEN"),
        "FORBIDDEN" => Some("the token's role may not do this; use a token with the role named above"),
        _ => None,
    }
}

/// Longest quiet time on an event stream before the connection counts as lost (the API
/// sends a keep-alive every 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// Talks to one API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// For event streams: no limit on the whole response, only on quiet time.
    streaming: reqwest::Client,
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:7070`, or an `https://` URL whose
    /// certificate the system's trust store vouches for; see [`sluice_worker::tls`]).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let build = |timeouts: &dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder| {
            Roots::load(None)
                .and_then(|roots| roots.client_builder())
                .and_then(|builder| timeouts(builder.connect_timeout(Duration::from_secs(5))).build().map_err(|e| error_chain(&e)))
                .map_err(|e| ClientError::Input(format!("cannot build the HTTP client: {e}")))
        };
        let http = build(&|b| b.timeout(Duration::from_secs(60)))?;
        let streaming = build(&|b| b.read_timeout(STREAM_IDLE))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http, streaming })
    }

    /// The API could not be reached: why, naming the API.
    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let e = e.without_url();
        let why = match tls::refused_certificate(&e) {
            Some(refused) if tls::unknown_issuer(refused) => format!(
                "the API's TLS certificate was refused ({refused}); if a private certificate \
                 authority signed it, point SSL_CERT_FILE at a PEM file of that authority"
            ),
            Some(refused) => format!("the API's TLS certificate was refused ({refused})"),
            None => error_chain(&e),
        };
        ClientError::Unreachable(format!("{}: {why}", self.base))
    }

    /// Opens the event stream at `path`, sending `last_event_id` as the `Last-Event-ID`
    /// header when given; the response is read by the caller as it arrives.
    pub async fn open_stream(&self, path: &str, last_event_id: Option<&str>) -> Result<reqwest::Response, ClientError> {
        let mut req = self.streaming.get(format!("{}{path}", self.base)).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let problem: Value = serde_json::from_str(&text).unwrap_or(json!({ "detail": text }));
        Err(ClientError::Refused { status: status.as_u16(), problem })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.call_status(method, path, body).await.map(|(_, v)| v)
    }

    /// As `call`, also returning the success status (201 Created vs 200 OK).
    async fn call_status(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(json!({ "detail": text }));
        if status.is_success() {
            Ok((status.as_u16(), value))
        } else {
            Err(ClientError::Refused { status: status.as_u16(), problem: value })
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// `sluice health`: 0 when `path` answers 2xx, and 1 for every failure, an unreachable API
/// included (health checkers reserve other exit codes).
pub async fn health(c: &Client, path: &str, as_json: bool) -> i32 {
    match c.get(path).await {
        Ok(body) => {
            if as_json {
                print_json(&body);
            } else {
                println!("ok: {}{path}", c.base);
            }
            0
        }
        Err(e) => {
            e.report();
            1
        }
    }
}

/// Prints a value as indented JSON.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The string member `k` of `v`, or `""`.
pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn ms(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

/// Prints an execution as a small table.
pub fn print_execution(e: &Value) {
    println!(
        "execution {}  pipeline {} v{}  status {}  run {}{}",
        s(e, "id"),
        s(e, "pipeline_id"),
        e.get("pipeline_version").and_then(Value::as_u64).unwrap_or(0),
        s(e, "status"),
        e.get("run").and_then(Value::as_u64).unwrap_or(1),
        e.get("target").and_then(Value::as_str).map(|t| format!("  target {t}")).unwrap_or_default(),
    );
    println!("{:<24} {:<10} {:>8} {:>10}  DETAIL", "STEP", "STATUS", "ATTEMPTS", "DURATION");
    for step in e.get("steps").and_then(Value::as_array).into_iter().flatten() {
        let duration = match (ms(step, "started_at"), ms(step, "finished_at")) {
            (Some(a), Some(b)) => sluice_core::duration::format(Duration::from_millis(u64::try_from(b - a).unwrap_or(0))),
            _ => String::new(),
        };
        println!(
            "{:<24} {:<10} {:>8} {:>10}  {}",
            s(step, "name"),
            s(step, "status"),
            step.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            duration,
            step_detail(step)
        );
    }
    if let Some(f) = e.get("failure").filter(|f| !f.is_null()) {
        println!("failure: {} ({})", s(f, "message"), s(f, "kind"));
        if let Some(tail) = f.get("stderr_tail").and_then(Value::as_str) {
            println!("stderr tail:\n{}", tail.trim_end());
        }
    }
}

/// What a step is waiting for or went through, in a few words: a gate's polls and last
/// summary, an approval's votes, a sleep's wake time.
fn step_detail(step: &Value) -> String {
    let count = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    if let Some(gate) = step.get("gate").filter(|g| g.is_object()) {
        let mut text = format!("polls {}, helper runs {}", count(gate, "polls"), count(gate, "helper_attempts"));
        if let Some(summary) = gate.get("last_summary").and_then(Value::as_str) {
            text.push_str(&format!(": {summary}"));
        }
        return text;
    }
    if let Some(approval) = step.get("approval").filter(|a| a.is_object()) {
        let voters: Vec<&str> = approval
            .get("approvals")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("subject").and_then(Value::as_str))
            .collect();
        let mut text = format!(
            "approval {}: {}/{}",
            s(approval, "status"),
            voters.len(),
            count(approval, "required")
        );
        if !voters.is_empty() {
            text.push_str(&format!(" ({})", voters.join(", ")));
        }
        return text;
    }
    if let Some(wake) = ms(step, "wake_at").filter(|_| s(step, "status") == "waiting") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let left = u64::try_from(wake - now).unwrap_or(0);
        return format!("wakes in {}", sluice_core::duration::format(Duration::from_millis(left)));
    }
    String::new()
}

fn print_job(j: &Value) {
    println!(
        "job {}  queue {}  kind {}  status {}  attempts {}/{}",
        s(j, "id"),
        s(j, "queue"),
        s(j, "kind"),
        s(j, "status"),
        j.get("attempts").and_then(Value::as_u64).unwrap_or(0),
        j.get("retry").and_then(|r| r.get("max_attempts")).and_then(Value::as_u64).unwrap_or(0),
    );
    if let Some(e) = j.get("execution_id").and_then(Value::as_str) {
        println!("execution {e}  step {}", j.get("step").and_then(Value::as_u64).unwrap_or(0));
    }
    if let Some(err) = j.get("last_error").filter(|e| !e.is_null()) {
        println!("last error: {}", s(err, "message"));
    }
    if let Some(result) = j.get("result").filter(|r| !r.is_null()) {
        println!("result: {result}");
    }
}

/// `sluice pipeline apply FILE`
pub async fn pipeline_apply(c: &Client, file: &std::path::Path, as_json: bool) -> Result<(), ClientError> {
    let parsed = crate::files::read_pipeline(file).map_err(|e| ClientError::Input(e.to_string()))?;
    let pipeline = parsed.map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("  {}: {}", p.field, p.message)).collect();
        ClientError::Input(format!("{} has {} problem(s):\n{}", file.display(), list.len(), list.join("\n")))
    })?;
    let body = serde_json::to_value(&pipeline).unwrap_or_default();
    let out = c.put(&format!("/v1/pipelines/{}", pipeline.id), &body).await?;
    if as_json {
        print_json(&out);
    } else {
        let changed = out.get("changed").and_then(Value::as_bool).unwrap_or(false);
        println!(
            "pipeline {} version {} ({})",
            pipeline.id,
            out.get("version").and_then(Value::as_u64).unwrap_or(0),
            if changed { "applied" } else { "unchanged" }
        );
    }
    Ok(())
}

/// Parses `--input`: inline JSON, or `@path` to a JSON file.
pub fn parse_input(input: Option<&str>) -> Result<Value, ClientError> {
    input.map_or_else(|| Ok(json!({})), |text| read_json("--input", text))
}

/// Reads the value of the JSON option `flag`: inline JSON, or `@path` to a JSON file.
fn read_json(flag: &str, text: &str) -> Result<Value, ClientError> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| ClientError::Input(format!("cannot read {path}: {e}")))?,
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| ClientError::Input(format!("{flag} is not valid JSON: {e}")))
}

/// `sluice exec start`
#[allow(clippy::too_many_arguments)]
pub async fn exec_start(
    c: &Client,
    pipeline: &str,
    input: Value,
    target: Option<String>,
    idempotency_key: Option<String>,
    wait: bool,
    as_json: bool,
) -> Result<i32, ClientError> {
    let mut body = json!({ "pipeline": pipeline, "input": input });
    if let Some(t) = target {
        body["target"] = json!(t);
    }
    if let Some(k) = idempotency_key {
        body["idempotency_key"] = json!(k);
    }
    let (status, exec) = c.call_status(reqwest::Method::POST, "/v1/executions", Some(&body)).await?;
    let id = s(&exec, "id").to_string();
    // 201: a new execution; 200: the idempotency key was used before, this is its execution.
    let what = if status == 201 {
        format!("started execution {id}")
    } else {
        format!("execution {id} already exists for this idempotency key (status {})", s(&exec, "status"))
    };
    if announce(&what, &exec, wait, as_json) {
        return Ok(0);
    }
    wait_and_report(c, &id, as_json).await
}

/// Reports what a create call did (`what`, or its `answer` as JSON). Returns whether the
/// command is done: without `wait` it is; with it, the caller goes on to wait, which is said
/// first (unless printing JSON).
fn announce(what: &str, answer: &Value, wait: bool, as_json: bool) -> bool {
    match (wait, as_json) {
        (false, true) => print_json(answer),
        (false, false) => println!("{what}"),
        (true, false) => println!("{what}; waiting for it to settle"),
        (true, true) => {}
    }
    !wait
}

/// Prints a settled record (as JSON, or with `print`) and turns its status into the exit
/// code: 0 completed, 1 otherwise.
fn report_settled(record: &Value, as_json: bool, print: fn(&Value)) -> i32 {
    if as_json {
        print_json(record);
    } else {
        print(record);
    }
    if s(record, "status") == "completed" { 0 } else { 1 }
}

/// Waits for execution `id` to settle, prints it, and turns its status into the exit code
/// (0 completed, 1 otherwise).
async fn wait_and_report(c: &Client, id: &str, as_json: bool) -> Result<i32, ClientError> {
    let final_exec = wait_for(c, id, !as_json).await?;
    Ok(report_settled(&final_exec, as_json, print_execution))
}

/// Filters of `sluice exec list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Status filter.
    pub status: Option<String>,
    /// Pipeline filter.
    pub pipeline: Option<String>,
    /// Target filter.
    pub target: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<String>,
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `sluice exec list`
pub async fn exec_list(c: &Client, filter: &ListFilter, as_json: bool) -> Result<(), ClientError> {
    let mut query = vec![format!("limit={}", filter.limit)];
    for (name, value) in [("status", &filter.status), ("pipeline", &filter.pipeline), ("target", &filter.target), ("cursor", &filter.cursor)] {
        if let Some(v) = value {
            query.push(format!("{name}={}", encode(v)));
        }
    }
    let page = c.get(&format!("/v1/executions?{}", query.join("&"))).await?;
    if as_json {
        print_json(&page);
        return Ok(());
    }
    println!("{:<34} {:<16} {:<10} {:>4} {:<24} {:<12}", "EXECUTION", "PIPELINE", "STATUS", "RUN", "TARGET", "STEP");
    for e in page.get("items").and_then(Value::as_array).into_iter().flatten() {
        let current = e.get("current").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or(0);
        let step = e.get("steps").and_then(Value::as_array).and_then(|st| st.get(current)).map(|st| s(st, "name")).unwrap_or("");
        println!(
            "{:<34} {:<16} {:<10} {:>4} {:<24} {:<12}",
            s(e, "id"),
            s(e, "pipeline_id"),
            s(e, "status"),
            e.get("run").and_then(Value::as_u64).unwrap_or(1),
            s(e, "target"),
            step
        );
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        println!("more: sluice exec list --cursor {cursor}");
    }
    Ok(())
}

/// `sluice exec cancel|retry|restart|pause|resume ID`
pub async fn exec_action(
    c: &Client,
    id: &str,
    action: &str,
    reason: Option<String>,
    from_step: Option<String>,
    wait: bool,
    as_json: bool,
) -> Result<i32, ClientError> {
    let mut body = json!({});
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    if let Some(step) = from_step {
        // A number names a step by index; anything else by name.
        body["from_step"] = step.parse::<u64>().map_or_else(|_| json!(step), |i| json!(i));
    }
    let exec = c.post(&format!("/v1/executions/{id}/{action}"), &body).await?;
    if wait {
        if !as_json {
            println!("execution {id}: {action} applied (run {}); waiting for it to settle", exec.get("run").and_then(Value::as_u64).unwrap_or(1));
        }
        return wait_and_report(c, id, as_json).await;
    }
    if as_json {
        print_json(&exec);
    } else {
        print_execution(&exec);
    }
    Ok(0)
}

/// `sluice exec approve|reject|request-changes ID STEP`: casts the vote, prints the
/// execution as it now is.
pub async fn exec_vote(
    c: &Client,
    id: &str,
    step: &str,
    vote: &str,
    field: Option<(&str, String)>,
    as_json: bool,
) -> Result<i32, ClientError> {
    let mut body = json!({});
    if let Some((name, text)) = field {
        body[name] = json!(text);
    }
    let exec = c.post(&format!("/v1/executions/{id}/steps/{}/{vote}", encode(step)), &body).await?;
    if as_json {
        print_json(&exec);
    } else {
        print_execution(&exec);
    }
    Ok(0)
}

/// `sluice exec events ID`
pub async fn exec_events(c: &Client, id: &str, as_json: bool) -> Result<(), ClientError> {
    let list = c.get(&format!("/v1/executions/{id}/events")).await?;
    if as_json {
        print_json(&list);
        return Ok(());
    }
    for e in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        println!("{:<22} {:<32} {}", s(e, "id"), s(e, "type"), e.get("data").map(Value::to_string).unwrap_or_default());
    }
    Ok(())
}

/// Polls an execution until it leaves the live statuses, printing each step change.
async fn wait_for(c: &Client, id: &str, progress: bool) -> Result<Value, ClientError> {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let e = c.get(&format!("/v1/executions/{id}")).await?;
        if progress {
            let steps = e.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, step) in steps.iter().enumerate() {
                let line = format!("{}:{}:{}", s(step, "name"), s(step, "status"), step.get("attempts").and_then(Value::as_u64).unwrap_or(0));
                if seen.get(i) != Some(&line) {
                    let status = s(step, "status");
                    if status != "pending" {
                        let attempt = step.get("attempts").and_then(Value::as_u64).unwrap_or(0);
                        let extra = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                        eprintln!("  [{}/{}] {:<20} {status}{extra}", i + 1, steps.len(), s(step, "name"));
                    }
                    if seen.len() <= i {
                        seen.resize(i + 1, String::new());
                    }
                    seen[i] = line;
                }
            }
        }
        if !matches!(s(&e, "status"), "running" | "paused" | "blocked") {
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `sluice exec get ID`
pub async fn exec_get(c: &Client, id: &str, as_json: bool) -> Result<(), ClientError> {
    let e = c.get(&format!("/v1/executions/{id}")).await?;
    if as_json { print_json(&e) } else { print_execution(&e) }
    Ok(())
}

/// `sluice job get ID`
pub async fn job_get(c: &Client, id: &str, as_json: bool) -> Result<(), ClientError> {
    let j = c.get(&format!("/v1/jobs/{id}")).await?;
    if as_json { print_json(&j) } else { print_job(&j) }
    Ok(())
}

/// A standalone job to enqueue (`sluice job enqueue`): the fields of `POST /v1/jobs`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobSpec {
    /// Queue (default: `default`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Job kind (`command` runs a program; `noop` does nothing).
    #[arg(long, default_value = "command")]
    pub kind: String,
    /// Payload: inline JSON, or @file (for a `command` job, give the command after `--` instead).
    #[arg(long, conflicts_with = "run")]
    pub payload: Option<String>,
    /// Extra environment variable of the command, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", requires = "run")]
    pub env: Vec<String>,
    /// Working directory of the command.
    #[arg(long, requires = "run")]
    pub cwd: Option<String>,
    /// Run no earlier than this long from now (`30s`, `5m`).
    #[arg(long)]
    pub delay: Option<String>,
    /// Higher runs first (-1000 to 1000, default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Attempts in total, including the first (1 to 100, default 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// While a pending job of the queue holds this key, enqueueing again returns that job.
    #[arg(long)]
    pub dedupe_key: Option<String>,
    /// Time limit of one attempt (`30s`, `5m`).
    #[arg(long)]
    pub timeout: Option<String>,
    /// The command of a `command` job, after `--`: the program and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub run: Vec<String>,
}

impl JobSpec {
    /// The body of `POST /v1/jobs`. Only local input is checked here (JSON, `NAME=VALUE`);
    /// the API checks the rest.
    pub fn body(&self) -> Result<Value, ClientError> {
        let mut body = json!({ "kind": self.kind });
        let payload = if self.run.is_empty() {
            self.payload.as_deref().map(|p| read_json("--payload", p)).transpose()?
        } else {
            let mut payload = json!({ "run": self.run });
            if !self.env.is_empty() {
                let mut env = serde_json::Map::new();
                for pair in &self.env {
                    let Some((name, value)) = pair.split_once('=') else {
                        return Err(ClientError::Input(format!("--env `{pair}` is not NAME=VALUE")));
                    };
                    env.insert(name.to_string(), json!(value));
                }
                payload["env"] = Value::Object(env);
            }
            if let Some(cwd) = &self.cwd {
                payload["cwd"] = json!(cwd);
            }
            Some(payload)
        };
        let fields = [
            ("queue", self.queue.as_ref().map(|v| json!(v))),
            ("payload", payload),
            ("delay", self.delay.as_ref().map(|v| json!(v))),
            ("priority", self.priority.map(|v| json!(v))),
            ("max_attempts", self.max_attempts.map(|v| json!(v))),
            ("dedupe_key", self.dedupe_key.as_ref().map(|v| json!(v))),
            ("timeout", self.timeout.as_ref().map(|v| json!(v))),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        Ok(body)
    }
}

/// Whether a job status is final.
fn job_settled(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// `sluice job enqueue`: prints the job (or its id); with `wait`, follows it until it settles
/// and exits 1 unless it completed.
pub async fn job_enqueue(c: &Client, spec: &JobSpec, wait: bool, as_json: bool) -> Result<i32, ClientError> {
    let body = spec.body()?;
    let (status, out) = c.call_status(reqwest::Method::POST, "/v1/jobs", Some(&body)).await?;
    let job = out.get("job").cloned().unwrap_or_default();
    let id = s(&job, "id").to_string();
    // 201: a new job; 200: a pending job of the queue already holds the dedupe key.
    let what = if status == 201 {
        format!("enqueued job {id} on queue {}", s(&job, "queue"))
    } else {
        format!("job {id} of queue {} already holds this dedupe key (status {})", s(&job, "queue"), s(&job, "status"))
    };
    if announce(&what, &out, wait, as_json) {
        return Ok(0);
    }
    let settled = wait_for_job(c, &id, !as_json).await?;
    Ok(report_settled(&settled, as_json, print_job))
}

/// Polls a job until it settles, printing each change of status or attempt (stderr).
async fn wait_for_job(c: &Client, id: &str, progress: bool) -> Result<Value, ClientError> {
    let mut last = String::new();
    loop {
        let j = c.get(&format!("/v1/jobs/{id}")).await?;
        let status = s(&j, "status");
        let attempts = j.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        let line = format!("{status}:{attempts}");
        if progress && line != last {
            let retrying = j.get("last_error").filter(|e| status == "pending" && !e.is_null());
            match retrying {
                Some(err) => eprintln!("  pending: attempt {attempts} failed ({}); retrying", s(err, "message")),
                None if attempts > 0 => eprintln!("  {status} (attempt {attempts})"),
                None => eprintln!("  {status}"),
            }
        }
        last = line;
        if job_settled(status) {
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The path of queue `name` under `/v1/queues` (percent-encoded, so any name reaches the
/// API, which judges it).
fn queue_path(name: &str, action: &str) -> String {
    format!("/v1/queues/{}{action}", encode(name))
}

/// Prints queue figures as a table.
fn print_queues(queues: &[Value]) {
    println!(
        "{:<24} {:>7} {:>7} {:>8} {:>7} {:>9} {:>6} {:>7} {:>9} {:>8} {:<6} {:>7}",
        "QUEUE", "READY", "DELAYED", "RESERVED", "RUNNING", "COMPLETED", "FAILED", "RETRIED", "CANCELLED", "OLDEST", "PAUSED", "WORKERS"
    );
    let n = |q: &Value, k: &str| q.get(k).and_then(Value::as_u64).unwrap_or(0);
    for q in queues {
        let oldest = q
            .get("oldest_ready_age_ms")
            .and_then(Value::as_u64)
            .map(|ms| sluice_core::duration::format(Duration::from_secs(ms / 1000)))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:>7} {:>7} {:>8} {:>7} {:>9} {:>6} {:>7} {:>9} {:>8} {:<6} {:>7}",
            s(q, "queue"),
            n(q, "ready"),
            n(q, "delayed"),
            n(q, "reserved"),
            n(q, "running"),
            n(q, "completed"),
            n(q, "failed"),
            n(q, "retried"),
            n(q, "cancelled"),
            oldest,
            if q.get("paused").and_then(Value::as_bool).unwrap_or(false) { "yes" } else { "no" },
            q.get("workers").and_then(Value::as_array).map_or(0, Vec::len),
        );
    }
}

/// `sluice queue stats [QUEUE]`
pub async fn queue_stats(c: &Client, queue: Option<&str>, as_json: bool) -> Result<(), ClientError> {
    let (out, items) = match queue {
        Some(q) => {
            let one = c.get(&queue_path(q, "")).await?;
            (one.clone(), vec![one])
        }
        None => {
            let all = c.get("/v1/queues").await?;
            let items = all.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            (all, items)
        }
    };
    if as_json {
        print_json(&out);
    } else if items.is_empty() {
        println!("no queue has held a job yet");
    } else {
        print_queues(&items);
    }
    Ok(())
}

/// `sluice queue pause|resume QUEUE`
pub async fn queue_action(c: &Client, queue: &str, action: &str, as_json: bool) -> Result<(), ClientError> {
    let out = c.post(&queue_path(queue, &format!("/{action}")), &json!({})).await?;
    if as_json {
        print_json(&out);
    } else {
        let done = if action == "pause" { "paused: workers lease none of its jobs until it is resumed" } else { "resumed" };
        println!("queue {} {done}", s(&out, "queue"));
        print_queues(&[out]);
    }
    Ok(())
}

/// `sluice job cancel ID`
pub async fn job_cancel(c: &Client, id: &str, as_json: bool) -> Result<(), ClientError> {
    let out = c.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await?;
    if as_json {
        print_json(&out);
    } else {
        println!("job {id} cancelled");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_refusals_exit_1_with_a_hint() {
        for (status, code) in [(401, "UNAUTHORIZED"), (403, "FORBIDDEN")] {
            let refused = ClientError::Refused { status, problem: json!({ "code": code }) };
            assert_eq!(refused.exit_code(), 1, "{code}");
            assert!(hint(code).is_some(), "{code}");
        }
        assert!(hint("UNAUTHORIZED").unwrap().contains("SLUICE_TOKEN"));
        assert_eq!(hint("TARGET_BUSY"), None);
    }

    #[test]
    fn a_command_after_the_separator_is_the_payload_of_a_command_job() {
        let spec = JobSpec {
            kind: "command".into(),
            run: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=b=c".into()],
            cwd: Some("/srv".into()),
            queue: Some("mail".into()),
            priority: Some(-5),
            ..JobSpec::default()
        };
        assert_eq!(
            spec.body().unwrap(),
            json!({"kind": "command", "queue": "mail", "priority": -5,
                   "payload": {"run": ["sh", "-c", "echo hi"], "env": {"A": "b=c"}, "cwd": "/srv"}})
        );
        let bad_env = JobSpec { env: vec!["A".into()], ..spec };
        assert!(matches!(bad_env.body(), Err(ClientError::Input(m)) if m.contains("NAME=VALUE")));
    }

    #[test]
    fn a_payload_option_is_json_and_options_left_out_are_not_sent() {
        let spec = JobSpec {
            kind: "noop".into(),
            payload: Some(r#"{"to": "ops"}"#.into()),
            delay: Some("5m".into()),
            max_attempts: Some(2),
            dedupe_key: Some("k".into()),
            timeout: Some("30s".into()),
            ..JobSpec::default()
        };
        assert_eq!(
            spec.body().unwrap(),
            json!({"kind": "noop", "payload": {"to": "ops"}, "delay": "5m", "max_attempts": 2,
                   "dedupe_key": "k", "timeout": "30s"})
        );
        let bare = JobSpec { kind: "noop".into(), ..JobSpec::default() };
        assert_eq!(bare.body().unwrap(), json!({"kind": "noop"}));
        let broken = JobSpec { payload: Some("{oops".into()), ..bare };
        assert!(matches!(broken.body(), Err(ClientError::Input(m)) if m.starts_with("--payload is not valid JSON")));
    }

    #[test]
    fn queue_names_are_percent_encoded_in_paths() {
        assert_eq!(queue_path("mail", "/pause"), "/v1/queues/mail/pause");
        assert_eq!(queue_path("a/b c", ""), "/v1/queues/a%2Fb%20c");
    }
}
