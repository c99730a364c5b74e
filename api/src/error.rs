//! The one place where failures become HTTP responses.
//!
//! Every error a handler, an extractor or a fallback can produce is an [`ApiError`]; its
//! [`IntoResponse`] renders an RFC 9457 problem document with content type
//! `application/problem+json`:
//!
//! ```json
//! {"type": "https://sluice.dev/problems/target-busy", "title": "Target busy", "status": 409,
//!  "detail": "target `repo:acme/web` already has a live execution (ex_0_01J…)",
//!  "code": "TARGET_BUSY", "target": "repo:acme/web", "execution_id": "ex_0_01J…"}
//! ```
//!
//! `code` is a stable machine-readable name (clients and the CLI switch on it); `type` is
//! derived from it (`https://sluice.dev/problems/<code in lowercase with dashes>`). Extension
//! members (`problems`, `execution_id`, `status`, …) sit beside the standard ones.
//!
//! Store failures are logged here, once, with `tracing::error!`; the client only gets a
//! short detail, never the internals of the failure.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sluice_core::{JobStatus, Problem};
use sluice_store::StoreError;

use crate::auth::{REALM, Role};

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Base of the `type` URI of every problem.
pub const PROBLEM_TYPE_BASE: &str = "https://sluice.dev/problems/";

/// Longest piece of client-supplied text (a path, an id) quoted back in a `detail`.
const QUOTE_LIMIT: usize = 200;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No route matches the path (`NOT_FOUND`, 404).
    #[error("no route matches `{path}`")]
    RouteNotFound {
        /// The request path (cut short when long).
        path: String,
    },
    /// The route exists but not for this method (`METHOD_NOT_ALLOWED`, 405; the `Allow`
    /// header lists the methods it has).
    #[error("method {method} is not allowed on `{path}`")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path (cut short when long).
        path: String,
    },
    /// The request cannot be read: invalid JSON, a malformed query string
    /// (`BAD_REQUEST`, 400).
    #[error("{0}")]
    BadRequest(String),
    /// The body is not declared as JSON (`UNSUPPORTED_MEDIA_TYPE`, 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the limit (`PAYLOAD_TOO_LARGE`, 413).
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is JSON but its fields are wrong (`VALIDATION_FAILED`, 422); every problem
    /// is listed.
    #[error("{}", summary("the request", problems))]
    Validation {
        /// Every problem, each naming its field.
        problems: Vec<Problem>,
    },
    /// A pipeline document does not validate (`PIPELINE_INVALID`, 422); every problem is
    /// listed.
    #[error("{}", summary("the pipeline", problems))]
    PipelineInvalid {
        /// Every problem, each naming its field.
        problems: Vec<Problem>,
    },
    /// No pipeline has this id (`PIPELINE_NOT_FOUND`, 404).
    #[error("pipeline `{id}` does not exist")]
    PipelineNotFound {
        /// The id asked for.
        id: String,
    },
    /// No execution has this id, or the id is malformed (`EXECUTION_NOT_FOUND`, 404).
    #[error("execution `{id}` does not exist")]
    ExecutionNotFound {
        /// The id asked for.
        id: String,
    },
    /// No job has this id, or the id is malformed (`JOB_NOT_FOUND`, 404).
    #[error("job `{id}` does not exist")]
    JobNotFound {
        /// The id asked for.
        id: String,
    },
    /// The target already has a live execution (`TARGET_BUSY`, 409).
    #[error(
        "target `{target}` already has a live execution ({holder}); wait for it to finish or cancel it"
    )]
    TargetBusy {
        /// The busy target.
        target: String,
        /// The execution holding it.
        holder: String,
    },
    /// Only pending jobs can be cancelled (`JOB_NOT_PENDING`, 409).
    #[error("job `{id}` is {}; only pending jobs can be cancelled", status.as_str())]
    JobNotPending {
        /// The job.
        id: String,
        /// Its status.
        status: JobStatus,
    },
    /// No valid bearer token: none was sent, it is not `Bearer <token>`, or it matches no
    /// configured token (`UNAUTHORIZED`, 401, with `WWW-Authenticate: Bearer
    /// realm="sluice"`). The detail says which, never echoing the token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token is valid but its role may not call this route (`FORBIDDEN`, 403).
    #[error(
        "`{subject}` has role {role}; {operation} needs role {needed}{}",
        if *needed == Role::Admin { "" } else { " or higher" }
    )]
    Forbidden {
        /// The token's subject.
        subject: String,
        /// The token's role.
        role: Role,
        /// The least role the route needs.
        needed: Role,
        /// The method and route template (`POST /v1/executions/{id}/retry`).
        operation: String,
    },
    /// The store is not reachable or not ready (`NOT_READY`, 503).
    #[error("the store is not ready: {0}")]
    NotReady(String),
    /// The store failed: `STORE_UNAVAILABLE` (503) when Redis cannot be reached or is busy,
    /// `INTERNAL` (500) otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an impossible state (`INTERNAL`, 500); the message is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

fn summary(what: &str, problems: &[Problem]) -> String {
    const SHOWN: usize = 5;
    let mut text = match problems.len() {
        1 => format!("{what} has 1 problem: "),
        n => format!("{what} has {n} problems: "),
    };
    let listed: Vec<String> = problems
        .iter()
        .take(SHOWN)
        .map(Problem::to_string)
        .collect();
    text.push_str(&listed.join("; "));
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

/// Cuts client-supplied text short before it is quoted back.
pub(crate) fn quote(text: &str) -> String {
    sluice_core::describe::quote(text, QUOTE_LIMIT)
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::RouteNotFound { .. }
            | ApiError::PipelineNotFound { .. }
            | ApiError::ExecutionNotFound { .. }
            | ApiError::JobNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. } | ApiError::PipelineInvalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TargetBusy { .. } | ApiError::JobNotPending { .. } => StatusCode::CONFLICT,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) if store_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::RouteNotFound { .. } => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden { .. } => "FORBIDDEN",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::Validation { .. } => "VALIDATION_FAILED",
            ApiError::PipelineInvalid { .. } => "PIPELINE_INVALID",
            ApiError::PipelineNotFound { .. } => "PIPELINE_NOT_FOUND",
            ApiError::ExecutionNotFound { .. } => "EXECUTION_NOT_FOUND",
            ApiError::JobNotFound { .. } => "JOB_NOT_FOUND",
            ApiError::TargetBusy { .. } => "TARGET_BUSY",
            ApiError::JobNotPending { .. } => "JOB_NOT_PENDING",
            ApiError::NotReady(_) => "NOT_READY",
            ApiError::Store(e) if store_unavailable(e) => "STORE_UNAVAILABLE",
            ApiError::Store(_) | ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// A short, fixed, human-readable summary of the code.
    pub fn title(&self) -> &'static str {
        match self.code() {
            "NOT_FOUND" => "Not found",
            "METHOD_NOT_ALLOWED" => "Method not allowed",
            "UNAUTHORIZED" => "Unauthorized",
            "FORBIDDEN" => "Forbidden",
            "BAD_REQUEST" => "Bad request",
            "UNSUPPORTED_MEDIA_TYPE" => "Unsupported media type",
            "PAYLOAD_TOO_LARGE" => "Payload too large",
            "VALIDATION_FAILED" => "Validation failed",
            "PIPELINE_INVALID" => "Pipeline invalid",
            "PIPELINE_NOT_FOUND" => "Pipeline not found",
            "EXECUTION_NOT_FOUND" => "Execution not found",
            "JOB_NOT_FOUND" => "Job not found",
            "TARGET_BUSY" => "Target busy",
            "JOB_NOT_PENDING" => "Job not pending",
            "NOT_READY" => "Not ready",
            "STORE_UNAVAILABLE" => "Store unavailable",
            _ => "Internal error",
        }
    }

    /// The `detail` sent to the client. Internal failures get a fixed sentence; their real
    /// cause goes to the log.
    fn detail(&self) -> String {
        match self {
            ApiError::Store(e) if store_unavailable(e) => {
                "the store (Redis) is unavailable or busy; try again shortly".into()
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                "an internal error occurred; it has been logged".into()
            }
            other => other.to_string(),
        }
    }

    /// Extension members beside the standard ones.
    fn extensions(&self) -> Map<String, Value> {
        let mut ext = Map::new();
        match self {
            ApiError::Validation { problems } | ApiError::PipelineInvalid { problems } => {
                ext.insert("problems".into(), json!(problems));
            }
            ApiError::PipelineNotFound { id } => {
                ext.insert("pipeline".into(), json!(id));
            }
            ApiError::TargetBusy { target, holder } => {
                ext.insert("target".into(), json!(target));
                ext.insert("execution_id".into(), json!(holder));
            }
            ApiError::JobNotPending { id, status } => {
                // Not `status`: that member is the HTTP status of the problem (RFC 9457).
                ext.insert("job_id".into(), json!(id));
                ext.insert("job_status".into(), json!(status.as_str()));
            }
            ApiError::PayloadTooLarge { limit } => {
                ext.insert("limit_bytes".into(), json!(limit));
            }
            ApiError::Forbidden { role, needed, .. } => {
                ext.insert("role".into(), json!(role.as_str()));
                ext.insert("required_role".into(), json!(needed.as_str()));
            }
            _ => {}
        }
        ext
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let code = self.code();
        let mut body = Map::new();
        body.insert("type".into(), json!(problem_type(code)));
        body.insert("title".into(), json!(self.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("detail".into(), json!(self.detail()));
        body.insert("code".into(), json!(code));
        for (key, value) in self.extensions() {
            // An extension never shadows a standard member.
            body.entry(key).or_insert(value);
        }
        Value::Object(body)
    }
}

/// Whether a store failure is worth retrying (Redis unreachable, timed out, or contended),
/// as opposed to a bug or a corrupt record.
fn store_unavailable(e: &StoreError) -> bool {
    matches!(e, StoreError::Redis(_) | StoreError::Contended(_))
}

/// The `type` URI of a code: `TARGET_BUSY` → `https://sluice.dev/problems/target-busy`.
pub fn problem_type(code: &str) -> String {
    format!(
        "{PROBLEM_TYPE_BASE}{}",
        code.to_ascii_lowercase().replace('_', "-")
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %e, code = self.code(), "store failure while serving a request")
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error while serving a request")
            }
            _ => {}
        }
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = format!("Bearer realm=\"{REALM}\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_type_is_the_code_in_lowercase_with_dashes() {
        assert_eq!(
            problem_type("TARGET_BUSY"),
            "https://sluice.dev/problems/target-busy"
        );
        assert_eq!(
            problem_type("NOT_FOUND"),
            "https://sluice.dev/problems/not-found"
        );
    }

    #[test]
    fn body_carries_the_standard_members_and_extensions() {
        let err = ApiError::TargetBusy {
            target: "repo:a".into(),
            holder: "ex_0_X".into(),
        };
        let body = err.body();
        assert_eq!(body["status"], 409);
        assert_eq!(body["code"], "TARGET_BUSY");
        assert_eq!(body["title"], "Target busy");
        assert_eq!(body["execution_id"], "ex_0_X");
        assert!(body["detail"].as_str().unwrap().contains("repo:a"));
    }

    #[test]
    fn not_pending_names_the_status() {
        let err = ApiError::JobNotPending {
            id: "job_0_X".into(),
            status: JobStatus::Running,
        };
        assert_eq!(
            err.body()["detail"],
            "job `job_0_X` is running; only pending jobs can be cancelled"
        );
        assert_eq!(err.body()["status"], 409);
        assert_eq!(err.body()["job_status"], "running");
    }

    #[test]
    fn internal_failures_do_not_leak_their_cause() {
        let err = ApiError::Store(StoreError::Corrupt {
            key: "secret-key".into(),
            reason: "x".into(),
        });
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.code(), "INTERNAL");
        assert!(!err.body().to_string().contains("secret-key"));
    }

    #[test]
    fn unauthorized_carries_the_bearer_challenge() {
        let response =
            ApiError::Unauthorized("the bearer token is not valid".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"sluice\""
        );
    }

    #[test]
    fn forbidden_names_the_role_held_and_the_role_needed() {
        let err = ApiError::Forbidden {
            subject: "uma".into(),
            role: Role::User,
            needed: Role::Admin,
            operation: "POST /v1/executions/{id}/retry".into(),
        };
        let body = err.body();
        assert_eq!(body["status"], 403);
        assert_eq!(body["code"], "FORBIDDEN");
        assert_eq!(
            body["detail"],
            "`uma` has role user; POST /v1/executions/{id}/retry needs role admin"
        );
        assert_eq!(body["role"], "user");
        assert_eq!(body["required_role"], "admin");
        let lower = ApiError::Forbidden {
            subject: "wes".into(),
            role: Role::Worker,
            needed: Role::User,
            operation: "POST /v1/executions".into(),
        };
        assert!(
            lower.to_string().ends_with("needs role user or higher"),
            "{lower}"
        );
    }

    #[test]
    fn validation_detail_summarises_the_problems() {
        let problems: Vec<Problem> = (0..7)
            .map(|i| Problem::new(format!("f{i}"), "is wrong"))
            .collect();
        let detail = ApiError::Validation { problems }.to_string();
        assert!(
            detail.starts_with("the request has 7 problems: f0: is wrong;"),
            "{detail}"
        );
        assert!(detail.ends_with("and 2 more"), "{detail}");
    }
}
