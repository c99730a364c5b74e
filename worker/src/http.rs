//! The HTTP side of the executors: one shared client per worker, the `http` step (a POST of
//! the step context) and the exchange the gate's HTTP probe builds on (see [`crate::gate`]).
//!
//! An `http` attempt maps the answer to an [`Outcome`]:
//!
//! | answer | outcome |
//! |---|---|
//! | 202 | `Deferred`, due `result_timeout` from the answer: the remote posts the result later |
//! | other 2xx | `Completed` with the body: its JSON, or a JSON string when it is not JSON, `null` when empty |
//! | 3xx | terminal failure: redirects are not followed (the lease token must not travel on) |
//! | 4xx | terminal failure, with the status and the start of the body |
//! | 5xx, no answer, network error, timeout | retryable failure |
//!
//! Every request carries `Sluice-Job-Id` and `Sluice-Attempt`; a step's POST also carries
//! `Idempotency-Key: <job id>.<attempt>` and `Sluice-Lease-Token` (the fencing token the
//! remote presents when it posts a deferred result), and its JSON body gets a
//! `"job": {"id", "attempt", "token"}` member next to the step context.
//!
//! `http://` and `https://` URLs are served. Server certificates are always verified,
//! against the roots of [`crate::tls`] (the system's store, plus `worker.ca_file`); a
//! certificate that does not verify is a retryable failure whose message says so (it may be
//! renewed), as is any other failed connection.
//!
//! Bounds: an attempt lasts at most its timeout ([`DEFAULT_TIMEOUT`] when the job has none);
//! at most [`MAX_BODY_BYTES`] of an answer are read; messages quote at most
//! [`EXCERPT_CHARS`] characters of a body; the URL in a message has no query string and no
//! credentials (placeholders may put secrets there).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use sluice_core::Millis;
use sluice_core::job::{Job, JobError, Outcome};
use sluice_core::pipeline::DEFAULT_RESULT_TIMEOUT_MS;
use tokio_util::sync::CancellationToken;

use crate::tls::{self, Roots, RootsOrigin};

/// Kind of a standalone job that POSTs its payload's `body` (see [`standalone_spec`]).
pub const KIND: &str = "http";
/// Time limit of one attempt whose job has none: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an answer that are read (1 MiB); a larger 2xx body fails the attempt.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most characters of a body quoted in a failure message.
pub const EXCERPT_CHARS: usize = 300;

/// The HTTP client of one worker: cheap to clone, shares its connection pool.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// A client that follows no redirects, names itself `sluice/<version>` and trusts the
    /// system's certificate authorities plus those of `ca_file` (see [`crate::tls`]).
    ///
    /// # Errors
    /// The reason the client cannot be built (such as an unreadable `ca_file`).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let roots = Roots::load(ca_file)?;
        match roots.origin() {
            RootsOrigin::System => tracing::debug!(
                certificates = roots.len(),
                from_ca_file = roots.extra(),
                "trusted certificate authorities loaded"
            ),
            RootsOrigin::Bundled { problems } => tracing::warn!(
                problems = %problems,
                "the system's trust store has no certificate; https endpoints are verified \
                 against the Mozilla roots bundled with sluice (install a CA bundle, or set \
                 SSL_CERT_FILE, to use the system's)"
            ),
        }
        roots
            .client_builder()?
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(|client| Self { client })
            .map_err(|e| error_chain(&e))
    }

    /// Sends one request and reads its answer, within `timeout`, until `cancel`.
    ///
    /// # Errors
    /// [`Failure`] when there is no answer to read.
    pub async fn exchange(
        &self,
        request: Exchange<'_>,
        cancel: &CancellationToken,
    ) -> Result<Answer, Failure> {
        let url = parse_url(request.url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers {
            let key = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Failure::Refused(format!("`{name}` is not a valid header name")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                Failure::Refused(format!(
                    "the value of header `{name}` is not a valid header value"
                ))
            })?;
            headers.insert(key, value);
        }
        for (name, value) in &request.sluice_headers {
            let value = HeaderValue::from_str(value).map_err(|_| {
                Failure::Refused(format!("the value of header `{name}` is not valid"))
            })?;
            headers.insert(name, value);
        }
        let mut req = reqwest::Request::new(request.method.clone(), url);
        if let Some(body) = &request.body {
            let bytes = serde_json::to_vec(body).map_err(|e| Failure::Refused(e.to_string()))?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *req.body_mut() = Some(bytes.into());
        }
        *req.headers_mut() = headers;
        if cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        let call = async {
            let mut response = self.client.execute(req).await.map_err(network)?;
            let status = response.status();
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await.map_err(network)? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    body.extend_from_slice(&chunk[..MAX_BODY_BYTES - body.len()]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                body,
                truncated,
                location,
            })
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Failure::Cancelled),
            () = tokio::time::sleep(request.timeout) => Err(Failure::TimedOut(request.timeout)),
            answer = call => answer,
        }
    }

    /// Runs one attempt of an `http` step: POSTs `spec.body` and maps the answer (see the
    /// module docs). `now` gives the time a 202 answer is counted from.
    pub async fn post(
        &self,
        spec: &PostSpec,
        cancel: &CancellationToken,
        now: &(dyn Fn() -> Millis + Sync),
    ) -> Outcome {
        let shown = shown_url(&spec.url);
        let request = Exchange {
            method: Method::POST,
            url: &spec.url,
            headers: &spec.headers,
            sluice_headers: [
                (IDEMPOTENCY_KEY, format!("{}.{}", spec.job_id, spec.attempt)),
                (LEASE_TOKEN, spec.lease_token.clone()),
            ]
            .into_iter()
            .chain(job_headers(&spec.job_id, spec.attempt))
            .collect(),
            body: Some(&spec.body),
            timeout: spec.timeout,
        };
        let answer = match self.exchange(request, cancel).await {
            Ok(answer) => answer,
            Err(failure) => {
                return Outcome::Failed(failure.into_job_error(&format!("POST {shown}")));
            }
        };
        let status = answer.status;
        let failed = |retryable: bool, detail: String| {
            Outcome::Failed(JobError {
                message: format!("POST {shown} answered {}{detail}", status_text(status)),
                retryable,
                ..JobError::default()
            })
        };
        if status == StatusCode::ACCEPTED {
            let wait = i64::try_from(spec.result_timeout.as_millis()).unwrap_or(i64::MAX);
            return Outcome::Deferred {
                deadline: now().saturating_add(wait),
            };
        }
        if status.is_success() {
            if answer.truncated {
                return failed(
                    false,
                    format!(" with a body larger than {} KiB", MAX_BODY_BYTES / 1024),
                );
            }
            return Outcome::Completed(answer.json_or_text());
        }
        if status.is_redirection() {
            let to = answer
                .location
                .as_deref()
                .map(shown_url)
                .unwrap_or_default();
            return failed(
                false,
                format!(" (redirects are not followed; Location: {to})"),
            );
        }
        failed(!status.is_client_error(), answer.excerpt_suffix())
    }
}

/// One request for [`HttpClient::exchange`].
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    /// GET or POST.
    pub method: Method,
    /// The URL, placeholders already rendered.
    pub url: &'a str,
    /// Headers from the definition, placeholders already rendered.
    pub headers: &'a BTreeMap<String, String>,
    /// Headers set by sluice; they win over `headers` of the same name.
    pub sluice_headers: Vec<(HeaderName, String)>,
    /// A JSON body, when there is one.
    pub body: Option<&'a Value>,
    /// Time limit of the whole exchange, body included.
    pub timeout: Duration,
}

/// The answer to an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body, at most [`MAX_BODY_BYTES`] of it.
    pub body: Vec<u8>,
    /// The body was longer than [`MAX_BODY_BYTES`].
    pub truncated: bool,
    /// The `Location` header, when there was one.
    pub location: Option<String>,
}

impl Answer {
    /// The body as JSON; a body that is not JSON becomes a JSON string, an empty (or blank)
    /// one `null`.
    pub fn json_or_text(&self) -> Value {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// `": <start of the body>"`, or nothing for a blank body.
    pub fn excerpt_suffix(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", cap_chars(text, EXCERPT_CHARS))
        }
    }
}

/// Why an exchange has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was sent: the URL or a header cannot be used. Another attempt cannot help.
    Refused(String),
    /// No answer: connection refused or reset, name not resolved, a broken body….
    Network(String),
    /// No complete answer within the time limit.
    TimedOut(Duration),
    /// The attempt was cancelled.
    Cancelled,
}

impl Failure {
    /// The attempt's failure, the message starting with `what` (e.g. `POST http://h/p`):
    /// `Refused` and `Cancelled` are terminal, the others retryable.
    pub fn into_job_error(self, what: &str) -> JobError {
        match self {
            Failure::Refused(why) => JobError::terminal(format!("{what}: {why}")),
            Failure::Network(why) => JobError::retryable(format!("{what}: {why}")),
            Failure::TimedOut(limit) => JobError::retryable(format!(
                "{what}: timed out after {}",
                sluice_core::duration::format(limit)
            )),
            Failure::Cancelled => JobError::terminal("cancelled"),
        }
    }
}

/// One attempt of an `http` step, everything rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct PostSpec {
    /// Where to POST.
    pub url: String,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (see [`step_body`]).
    pub body: Value,
    /// The job's id.
    pub job_id: String,
    /// The attempt number (from 1).
    pub attempt: u32,
    /// The lease token of the attempt.
    pub lease_token: String,
    /// Time limit of the exchange.
    pub timeout: Duration,
    /// How long a 202 waits for its posted result.
    pub result_timeout: Duration,
}

impl PostSpec {
    /// The attempt of `job` (an `http` step's, or an `http` helper's) held under
    /// `lease_token`: the body is the step context with the job (see [`step_body`]).
    pub fn for_step(
        url: String,
        headers: BTreeMap<String, String>,
        context: Value,
        job: &Job,
        lease_token: &str,
        result_timeout_ms: Option<u64>,
    ) -> Self {
        PostSpec {
            url,
            headers,
            body: step_body(context, &job.id, job.attempts, lease_token),
            job_id: job.id.clone(),
            attempt: job.attempts,
            lease_token: lease_token.to_string(),
            timeout: attempt_timeout(job.timeout_ms),
            result_timeout: Duration::from_millis(
                result_timeout_ms.unwrap_or(DEFAULT_RESULT_TIMEOUT_MS),
            ),
        }
    }
}

/// The body of a step's POST: the step context with a `job` member naming the job, the
/// attempt and the lease token. A context that is not an object is kept under `context`.
pub fn step_body(context: Value, job_id: &str, attempt: u32, lease_token: &str) -> Value {
    let job = json!({ "id": job_id, "attempt": attempt, "token": lease_token });
    match context {
        Value::Object(mut map) => {
            map.insert("job".into(), job);
            Value::Object(map)
        }
        other => json!({ "context": other, "job": job }),
    }
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const LEASE_TOKEN: HeaderName = HeaderName::from_static("sluice-lease-token");

/// `Sluice-Job-Id` and `Sluice-Attempt`, sent with every request of a job.
pub fn job_headers(job_id: &str, attempt: u32) -> [(HeaderName, String); 2] {
    [
        (HeaderName::from_static("sluice-job-id"), job_id.to_string()),
        (
            HeaderName::from_static("sluice-attempt"),
            attempt.to_string(),
        ),
    ]
}

/// The time limit of an attempt of a job with `timeout_ms` (default [`DEFAULT_TIMEOUT`]).
pub fn attempt_timeout(timeout_ms: Option<u64>) -> Duration {
    timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// The attempt of a standalone `http` job, whose payload is
/// `{"url", "headers"?, "body"?, "result_timeout_ms"?}`: `body` (default `{}`) is sent as it
/// is, the job's id, attempt and lease token travel in the headers only.
///
/// # Errors
/// What is wrong with the payload.
pub fn standalone_spec(job: &Job, lease_token: &str) -> Result<PostSpec, String> {
    let payload = &job.payload;
    let url = payload
        .get("url")
        .and_then(Value::as_str)
        .ok_or("payload.url must be a string")?;
    let headers = match payload.get("headers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(h) => serde_json::from_value(h.clone())
            .map_err(|_| "payload.headers must be an object of strings".to_string())?,
    };
    let result_timeout_ms = match payload.get("result_timeout_ms") {
        None | Some(Value::Null) => DEFAULT_RESULT_TIMEOUT_MS,
        Some(ms) => ms
            .as_u64()
            .ok_or("payload.result_timeout_ms must be a whole number")?,
    };
    Ok(PostSpec {
        url: url.to_string(),
        headers,
        body: payload.get("body").cloned().unwrap_or_else(|| json!({})),
        job_id: job.id.clone(),
        attempt: job.attempts,
        lease_token: lease_token.to_string(),
        timeout: attempt_timeout(job.timeout_ms),
        result_timeout: Duration::from_millis(result_timeout_ms),
    })
}

/// `200 OK`, `599`.
pub(crate) fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn parse_url(text: &str) -> Result<Url, Failure> {
    let url = Url::parse(text)
        .map_err(|e| Failure::Refused(format!("`{}` is not a valid URL: {e}", shown_url(text))))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(Failure::Refused(format!(
            "URL scheme `{other}` is not supported; use http:// or https://"
        ))),
    }
}

/// The URL as shown in messages: without credentials, query string or fragment.
pub fn shown_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => cap_chars(text.split(['?', '#']).next().unwrap_or_default(), 200),
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn cap_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

fn network(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    Failure::Network(certificate_problem(&e).unwrap_or_else(|| error_chain(&e)))
}

/// What is wrong with the server's certificate, when that is why the connection failed.
fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let refused = tls::refused_certificate(e)?;
    let hint = if tls::unknown_issuer(refused) {
        "; if a private certificate authority signed it, add that authority to worker.ca_file"
    } else {
        ""
    };
    Some(format!(
        "the server's TLS certificate was refused ({refused}){hint}"
    ))
}

/// The error and its sources, `: `-separated, skipping a source already quoted.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &[u8]) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: body.to_vec(),
            truncated: false,
            location: None,
        }
    }

    #[test]
    fn bodies_become_json_text_or_null() {
        assert_eq!(answer(br#"{"a": [1]}"#).json_or_text(), json!({"a": [1]}));
        assert_eq!(
            answer(b"deployed v2\n").json_or_text(),
            json!("deployed v2\n")
        );
        assert_eq!(answer(b" \n").json_or_text(), Value::Null);
        assert_eq!(answer(b"").json_or_text(), Value::Null);
    }

    #[test]
    fn excerpts_are_capped_and_blank_bodies_quote_nothing() {
        assert_eq!(answer(b"  ").excerpt_suffix(), "");
        let long = "é".repeat(EXCERPT_CHARS + 10);
        let suffix = answer(long.as_bytes()).excerpt_suffix();
        assert_eq!(suffix.chars().count(), 2 + EXCERPT_CHARS + 1);
        assert!(suffix.ends_with('…'));
    }

    #[test]
    fn shown_urls_lose_credentials_and_query() {
        assert_eq!(
            shown_url("http://user:secret@ci.example:8080/status?token=abc#x"),
            "http://ci.example:8080/status"
        );
        assert_eq!(shown_url("not a url?token=abc"), "not a url");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(parse_url("http://127.0.0.1:1/x").is_ok());
        assert!(parse_url("https://example.com/").is_ok());
        let Err(Failure::Refused(why)) = parse_url("ftp://example.com/") else {
            panic!()
        };
        assert!(
            why.contains("`ftp`") && why.ends_with("use http:// or https://"),
            "{why}"
        );
        let Err(Failure::Refused(why)) = parse_url("/relative") else {
            panic!()
        };
        assert!(why.contains("not a valid URL"), "{why}");
    }

    #[test]
    fn the_step_body_is_the_context_with_the_job() {
        let body = step_body(json!({"input": {"x": 1}, "steps": {}}), "job_1", 2, "tok");
        assert_eq!(
            body,
            json!({"input": {"x": 1}, "steps": {}, "job": {"id": "job_1", "attempt": 2, "token": "tok"}})
        );
        let body = step_body(json!(5), "job_1", 1, "tok");
        assert_eq!(body["context"], json!(5));
    }

    #[test]
    fn a_refused_certificate_is_named_wherever_it_is_wrapped() {
        use std::io::{Error, ErrorKind};
        let wrapped = |why: rustls::CertificateError| {
            let tls = rustls::Error::InvalidCertificate(why);
            Error::other(Error::new(ErrorKind::InvalidData, tls))
        };
        assert_eq!(
            certificate_problem(&wrapped(rustls::CertificateError::Expired)).as_deref(),
            Some("the server's TLS certificate was refused (invalid peer certificate: Expired)")
        );
        let unknown = certificate_problem(&wrapped(rustls::CertificateError::UnknownIssuer));
        assert!(
            unknown
                .unwrap()
                .ends_with("add that authority to worker.ca_file")
        );
        let reset = Error::new(ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(certificate_problem(&reset), None);
    }

    #[test]
    fn failures_are_classified() {
        let refused = Failure::Refused("bad".into()).into_job_error("POST u");
        assert_eq!(
            (refused.message.as_str(), refused.retryable),
            ("POST u: bad", false)
        );
        let timed_out = Failure::TimedOut(Duration::from_millis(1500)).into_job_error("GET u");
        assert_eq!(
            (timed_out.message.as_str(), timed_out.retryable),
            ("GET u: timed out after 1s500ms", true)
        );
        assert!(
            Failure::Network("reset".into())
                .into_job_error("x")
                .retryable
        );
        assert!(!Failure::Cancelled.into_job_error("x").retryable);
    }
}
