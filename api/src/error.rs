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
use sluice_core::approval::VoteRefusal;
use sluice_core::control::Refusal;
use sluice_core::{ExecutionStatus, JobStatus, Problem};
use sluice_store::StoreError;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{ToResponse, ToSchema};

use crate::auth::{REALM, Role};

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Base of the `type` URI of every problem.
pub const PROBLEM_TYPE_BASE: &str = "https://sluice.dev/problems/";

/// Longest piece of client-supplied text (a path, an id) quoted back in a `detail`.
const QUOTE_LIMIT: usize = 200;

/// Every stable `code` a problem can carry ([`ApiError::code`]), in the order of the
/// variants of [`ApiError`]. The OpenAPI document lists them as the values of `code`.
pub const CODES: &[&str] = &[
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "BAD_REQUEST",
    "UNSUPPORTED_MEDIA_TYPE",
    "PAYLOAD_TOO_LARGE",
    "VALIDATION_FAILED",
    "PIPELINE_INVALID",
    "PIPELINE_NOT_FOUND",
    "EXECUTION_NOT_FOUND",
    "JOB_NOT_FOUND",
    "SCHEDULE_NOT_FOUND",
    "SCHEDULE_NAME_TAKEN",
    "TARGET_BUSY",
    "JOB_NOT_PENDING",
    "EXECUTION_NOT_RETRYABLE",
    "EXECUTION_NOT_PAUSABLE",
    "EXECUTION_NOT_PAUSED",
    "STEP_OUT_OF_RANGE",
    "STEP_NOT_FOUND",
    "NOT_AWAITING_APPROVAL",
    "NOT_AN_APPROVER",
    "NOTHING_TO_REWORK",
    "LEASE_LOST",
    "RESULT_ALREADY_APPLIED",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_READY",
    "STORE_UNAVAILABLE",
    "INTERNAL",
];

// Documentation only: `ApiError::body` builds the document; a test checks that every member
// it writes is described here.
/// An RFC 9457 problem document: the body of every error response, sent as
/// `application/problem+json`.
///
/// `code` is the stable, machine-readable name of the problem (clients switch on it);
/// `type` is derived from it. Extension members sit beside the standard ones: the ones
/// listed here are sent with the codes their descriptions name, and clients must ignore
/// members they do not know.
#[derive(ToSchema)]
#[schema(as = Problem, example = json!({
    "type": "https://sluice.dev/problems/target-busy",
    "title": "Target busy",
    "status": 409,
    "detail": "target `repo:acme/web` already has a live execution (ex_0_01JD0000000000000000000000); wait for it to finish or cancel it",
    "code": "TARGET_BUSY",
    "target": "repo:acme/web",
    "execution_id": "ex_0_01JD0000000000000000000000"
}))]
#[expect(
    dead_code,
    reason = "documentation only: `ApiError::body` builds the document"
)]
pub(crate) struct ProblemDocument {
    /// `https://sluice.dev/problems/<code in lowercase with dashes>`.
    #[schema(rename = "type", format = "uri")]
    kind: String,
    /// A short, fixed, human-readable summary of the code.
    title: String,
    /// The HTTP status of the response.
    status: u16,
    /// What went wrong in this occurrence, for humans.
    detail: String,
    /// The stable name of the problem.
    #[schema(schema_with = code_schema)]
    code: String,
    /// `VALIDATION_FAILED`, `PIPELINE_INVALID`: every problem found, each naming its field.
    #[schema(required = false)]
    problems: Vec<Problem>,
    /// `PIPELINE_NOT_FOUND`: the pipeline id asked for.
    #[schema(required = false)]
    pipeline: String,
    /// `SCHEDULE_NOT_FOUND`: the schedule asked for (an id or a name).
    #[schema(required = false)]
    schedule: String,
    /// `SCHEDULE_NAME_TAKEN`: the schedule that has the name.
    #[schema(required = false)]
    schedule_id: String,
    /// `TARGET_BUSY`: the busy target.
    #[schema(required = false)]
    target: String,
    /// `TARGET_BUSY`: the live execution holding the target.
    #[schema(required = false)]
    execution_id: String,
    /// `JOB_NOT_PENDING`, `LEASE_LOST`, `RESULT_ALREADY_APPLIED`: the job.
    #[schema(required = false)]
    job_id: String,
    /// `JOB_NOT_PENDING`: the job's status.
    #[schema(required = false)]
    job_status: JobStatus,
    /// `EXECUTION_NOT_RETRYABLE`, `EXECUTION_NOT_PAUSABLE`, `EXECUTION_NOT_PAUSED`: the
    /// execution's status.
    #[schema(required = false)]
    execution_status: ExecutionStatus,
    /// `STEP_NOT_FOUND`, `NOT_AWAITING_APPROVAL`, `NOT_AN_APPROVER`, `NOTHING_TO_REWORK`:
    /// the step (its name).
    #[schema(required = false)]
    step: String,
    /// `FORBIDDEN`: the role of the caller's token.
    #[schema(required = false)]
    role: String,
    /// `FORBIDDEN`: the least role the operation needs.
    #[schema(required = false)]
    required_role: String,
    /// `PAYLOAD_TOO_LARGE`: the largest body accepted, in bytes.
    #[schema(required = false)]
    limit_bytes: u64,
}

/// Declares a documentation-only response type per problem code, for handlers to list as
/// `(status = ..., response = inline(Type))`: the doc comment is the response's description,
/// the body a [`ProblemDocument`] sent as `application/problem+json`; `[...]` adds response
/// attributes (headers).
macro_rules! problem_responses {
    ($( $(#[doc = $doc:literal])* $name:ident $([$($extra:tt)*])?; )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(ToResponse)]
            #[response(content_type = "application/problem+json" $(, $($extra)*)?)]
            #[expect(dead_code, reason = "documentation only: `ApiError` builds the response")]
            pub(crate) struct $name(ProblemDocument);
        )*
    };
}

problem_responses! {
    /// `BAD_REQUEST`: the request cannot be read: the body is not valid JSON (the detail
    /// names the line and column), a path parameter is not valid percent-encoding or not a
    /// valid name (a queue), a query parameter has a value the operation does not know, or
    /// a header the operation requires is missing or malformed (the detail names it).
    BadRequest;
    /// `PAYLOAD_TOO_LARGE`: the body is larger than the limit (`limit_bytes`, 1 MiB).
    PayloadTooLarge;
    /// `UNSUPPORTED_MEDIA_TYPE`: the body is not sent as `application/json`.
    UnsupportedMediaType;
    /// `VALIDATION_FAILED`: the body is JSON but some fields are wrong; `problems` names
    /// every one.
    ValidationFailed;
    /// `PIPELINE_INVALID`: the pipeline document does not validate; `problems` lists every
    /// problem.
    PipelineInvalid;
    /// `PIPELINE_NOT_FOUND`: no pipeline has this id (`pipeline`).
    PipelineNotFound;
    /// `EXECUTION_NOT_FOUND`: no execution has this id (also for a malformed id).
    ExecutionNotFound;
    /// `JOB_NOT_FOUND`: no job has this id (also for a malformed id).
    JobNotFound;
    /// `SCHEDULE_NOT_FOUND`: no schedule has this id or name (`schedule`).
    ScheduleNotFound;
    /// `SCHEDULE_NAME_TAKEN`: another schedule (`schedule_id`) has this name.
    ScheduleNameTaken;
    /// `TARGET_BUSY`: the target already has a live execution, named by `execution_id`.
    TargetBusy;
    /// `JOB_NOT_PENDING`: only pending jobs can be cancelled; `job_status` says what the job
    /// is.
    JobNotPending;
    /// `EXECUTION_NOT_RETRYABLE`: only failed or cancelled executions can be retried;
    /// `execution_status` says what it is.
    ExecutionNotRetryable;
    /// `EXECUTION_NOT_PAUSABLE`: only running or blocked executions can be paused.
    ExecutionNotPausable;
    /// `EXECUTION_NOT_PAUSED`: only paused executions can be resumed.
    ExecutionNotPaused;
    /// `STEP_OUT_OF_RANGE`: the step to restart from is not in the pipeline, or a step
    /// before it has not succeeded.
    StepOutOfRange;
    /// `STEP_NOT_FOUND`: the execution has no step with this name or index (`step`).
    StepNotFound;
    /// `NOT_AWAITING_APPROVAL`: the step does not wait for an approval (it is not blocked
    /// on one, or the execution moved on).
    NotAwaitingApproval;
    /// `FORBIDDEN`: the token's role may not call this operation (`role`,
    /// `required_role`); or `NOT_AN_APPROVER`: the caller is not among the step's
    /// `approvers`.
    NotAnApprover;
    /// `NOTHING_TO_REWORK`: changes were asked on an `approval` step that has no step
    /// before it to run again.
    NothingToRework;
    /// `LEASE_LOST`: the token does not hold the job's lease (it expired and the job was
    /// reclaimed, or leased again, or the job settled), or no attempt of the job is
    /// running; nothing changed. Stop working on the job.
    LeaseLost;
    /// `LEASE_LOST`: the token does not hold the job's lease any more (it expired and the
    /// job was reclaimed or leased again, or the job settled), or, without a token, no
    /// attempt of the job runs. `RESULT_ALREADY_APPLIED`: a result with another
    /// `Idempotency-Key` already settled this attempt. Either way nothing changed.
    ResultConflict;
    /// `UNAUTHORIZED`: no valid bearer token: none was sent, the `Authorization` header is
    /// not `Bearer <token>`, or the token matches no configured token.
    Unauthorized [headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"sluice\"`."))];
    /// `FORBIDDEN`: the token is valid but its role may not call this operation; `role` is
    /// the token's role, `required_role` the least role the operation needs.
    Forbidden;
    /// `NOT_READY`: Redis is unreachable, slow, or refused a script.
    NotReady [headers(("Retry-After" = u32, description = "Seconds to wait before trying again."))];
    /// `STORE_UNAVAILABLE`: Redis is unreachable or busy; try again shortly.
    StoreUnavailable [headers(("Retry-After" = u32, description = "Seconds to wait before trying again."))];
    /// `INTERNAL`: a bug or a corrupt record; the cause is logged, not sent.
    Internal;
}

/// The schema of `code`: a string, one of [`CODES`].
fn code_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The stable, machine-readable name of the problem; clients switch on it.",
        ))
        .enum_values(Some(CODES.iter().copied()))
        .build()
}

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
    /// No schedule has this id or name (`SCHEDULE_NOT_FOUND`, 404).
    #[error("schedule `{id}` does not exist")]
    ScheduleNotFound {
        /// The id or name asked for.
        id: String,
    },
    /// Another schedule has the name (`SCHEDULE_NAME_TAKEN`, 409).
    #[error("another schedule ({holder}) is called `{name}`; schedule names are unique")]
    ScheduleNameTaken {
        /// The name.
        name: String,
        /// The schedule that has it.
        holder: String,
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
    /// A heartbeat or a result whose token does not hold the job's lease, or a result
    /// without a token while no attempt runs (`LEASE_LOST`, 409).
    #[error("{detail}")]
    LeaseLost {
        /// The job.
        id: String,
        /// What was found.
        detail: String,
    },
    /// A result with another `Idempotency-Key` already settled the attempt
    /// (`RESULT_ALREADY_APPLIED`, 409).
    #[error(
        "a result with another Idempotency-Key was already applied to this attempt of job `{id}`; \
         repeat a result with its own key to read its answer"
    )]
    ResultAlreadyApplied {
        /// The job.
        id: String,
    },
    /// An operator action is not allowed in the execution's state
    /// (`EXECUTION_NOT_RETRYABLE`, `EXECUTION_NOT_PAUSABLE`, `EXECUTION_NOT_PAUSED`: 409;
    /// `STEP_OUT_OF_RANGE`: 422).
    #[error("execution `{id}`: {refusal}")]
    Refused {
        /// The execution.
        id: String,
        /// Why.
        refusal: Refusal,
    },
    /// The execution has no such step (`STEP_NOT_FOUND`, 404).
    #[error("execution `{id}` has no step `{step}`; its steps are {steps}")]
    StepNotFound {
        /// The execution.
        id: String,
        /// The step asked for.
        step: String,
        /// The names of its steps, listed.
        steps: String,
    },
    /// An approval vote was refused (`NOT_AWAITING_APPROVAL`, `NOTHING_TO_REWORK`: 409;
    /// `NOT_AN_APPROVER`: 403).
    #[error("execution `{id}`: {}", vote_refusal_text(refusal))]
    VoteRefused {
        /// The execution.
        id: String,
        /// The step's name.
        step: String,
        /// Why.
        refusal: VoteRefusal,
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

fn vote_refusal_text(refusal: &VoteRefusal) -> &str {
    match refusal {
        VoteRefusal::NotAwaitingApproval(m) | VoteRefusal::NotAnApprover(m) | VoteRefusal::NothingToRework(m) => m,
    }
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
            | ApiError::JobNotFound { .. }
            | ApiError::ScheduleNotFound { .. }
            | ApiError::StepNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::VoteRefused { refusal: VoteRefusal::NotAnApprover(_), .. } => StatusCode::FORBIDDEN,
            ApiError::VoteRefused { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. } | ApiError::PipelineInvalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TargetBusy { .. }
            | ApiError::ScheduleNameTaken { .. }
            | ApiError::JobNotPending { .. }
            | ApiError::LeaseLost { .. }
            | ApiError::ResultAlreadyApplied { .. } => StatusCode::CONFLICT,
            ApiError::Refused { refusal: Refusal::StepOutOfRange(_), .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Refused { .. } => StatusCode::CONFLICT,
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
            ApiError::ScheduleNotFound { .. } => "SCHEDULE_NOT_FOUND",
            ApiError::ScheduleNameTaken { .. } => "SCHEDULE_NAME_TAKEN",
            ApiError::TargetBusy { .. } => "TARGET_BUSY",
            ApiError::JobNotPending { .. } => "JOB_NOT_PENDING",
            ApiError::LeaseLost { .. } => "LEASE_LOST",
            ApiError::ResultAlreadyApplied { .. } => "RESULT_ALREADY_APPLIED",
            ApiError::Refused { refusal, .. } => match refusal {
                Refusal::NotRetryable(_) => "EXECUTION_NOT_RETRYABLE",
                Refusal::NotPausable(_) => "EXECUTION_NOT_PAUSABLE",
                Refusal::NotPaused(_) => "EXECUTION_NOT_PAUSED",
                Refusal::StepOutOfRange(_) => "STEP_OUT_OF_RANGE",
            },
            ApiError::StepNotFound { .. } => "STEP_NOT_FOUND",
            ApiError::VoteRefused { refusal, .. } => match refusal {
                VoteRefusal::NotAwaitingApproval(_) => "NOT_AWAITING_APPROVAL",
                VoteRefusal::NotAnApprover(_) => "NOT_AN_APPROVER",
                VoteRefusal::NothingToRework(_) => "NOTHING_TO_REWORK",
            },
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
            "SCHEDULE_NOT_FOUND" => "Schedule not found",
            "SCHEDULE_NAME_TAKEN" => "Schedule name taken",
            "TARGET_BUSY" => "Target busy",
            "JOB_NOT_PENDING" => "Job not pending",
            "EXECUTION_NOT_RETRYABLE" => "Execution not retryable",
            "EXECUTION_NOT_PAUSABLE" => "Execution not pausable",
            "EXECUTION_NOT_PAUSED" => "Execution not paused",
            "STEP_OUT_OF_RANGE" => "Step out of range",
            "STEP_NOT_FOUND" => "Step not found",
            "NOT_AWAITING_APPROVAL" => "Not awaiting approval",
            "NOT_AN_APPROVER" => "Not an approver",
            "NOTHING_TO_REWORK" => "Nothing to rework",
            "LEASE_LOST" => "Lease lost",
            "RESULT_ALREADY_APPLIED" => "Result already applied",
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
            ApiError::ScheduleNotFound { id } => {
                ext.insert("schedule".into(), json!(id));
            }
            ApiError::ScheduleNameTaken { holder, .. } => {
                ext.insert("schedule_id".into(), json!(holder));
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
            ApiError::LeaseLost { id, .. } | ApiError::ResultAlreadyApplied { id } => {
                ext.insert("job_id".into(), json!(id));
            }
            ApiError::PayloadTooLarge { limit } => {
                ext.insert("limit_bytes".into(), json!(limit));
            }
            ApiError::Refused { id, refusal } => {
                ext.insert("execution_id".into(), json!(id));
                if let Refusal::NotRetryable(status) | Refusal::NotPausable(status) | Refusal::NotPaused(status) = refusal {
                    ext.insert("execution_status".into(), json!(status.as_str()));
                }
            }
            ApiError::StepNotFound { id, step, .. } | ApiError::VoteRefused { id, step, .. } => {
                ext.insert("execution_id".into(), json!(id));
                ext.insert("step".into(), json!(step));
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
    use std::collections::BTreeSet;

    use super::*;
    use crate::openapi::property_names;

    /// One error of each variant, with every extension member it can carry. When a variant
    /// is added, [`variant_is_listed`] stops compiling until the variant is listed here too.
    fn one_of_each() -> Vec<ApiError> {
        vec![
            ApiError::RouteNotFound { path: "/x".into() },
            ApiError::MethodNotAllowed {
                method: "DELETE".into(),
                path: "/x".into(),
            },
            ApiError::BadRequest("x".into()),
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Validation {
                problems: vec![Problem::new("a", "is wrong")],
            },
            ApiError::PipelineInvalid {
                problems: vec![Problem::new("a", "is wrong")],
            },
            ApiError::PipelineNotFound { id: "p".into() },
            ApiError::ExecutionNotFound { id: "e".into() },
            ApiError::JobNotFound { id: "j".into() },
            ApiError::ScheduleNotFound { id: "s".into() },
            ApiError::ScheduleNameTaken { name: "n".into(), holder: "sch_0_X".into() },
            ApiError::TargetBusy {
                target: "t".into(),
                holder: "e".into(),
            },
            ApiError::JobNotPending {
                id: "j".into(),
                status: JobStatus::Running,
            },
            ApiError::LeaseLost {
                id: "j".into(),
                detail: "lost".into(),
            },
            ApiError::ResultAlreadyApplied { id: "j".into() },
            ApiError::Refused { id: "e".into(), refusal: Refusal::NotRetryable(ExecutionStatus::Running) },
            ApiError::Refused { id: "e".into(), refusal: Refusal::NotPausable(ExecutionStatus::Failed) },
            ApiError::Refused { id: "e".into(), refusal: Refusal::NotPaused(ExecutionStatus::Running) },
            ApiError::Refused { id: "e".into(), refusal: Refusal::StepOutOfRange("x".into()) },
            ApiError::StepNotFound { id: "e".into(), step: "s".into(), steps: "a, b".into() },
            ApiError::VoteRefused { id: "e".into(), step: "s".into(), refusal: VoteRefusal::NotAwaitingApproval("x".into()) },
            ApiError::VoteRefused { id: "e".into(), step: "s".into(), refusal: VoteRefusal::NotAnApprover("x".into()) },
            ApiError::VoteRefused { id: "e".into(), step: "s".into(), refusal: VoteRefusal::NothingToRework("x".into()) },
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden {
                subject: "s".into(),
                role: Role::User,
                needed: Role::Admin,
                operation: "POST /x".into(),
            },
            ApiError::NotReady("x".into()),
            ApiError::Store(StoreError::Contended("e".into())),
            ApiError::Internal("x".into()),
        ]
    }

    /// Exhaustive on purpose (no `_` arm): see [`one_of_each`].
    fn variant_is_listed(error: &ApiError) -> bool {
        match error {
            ApiError::RouteNotFound { .. }
            | ApiError::MethodNotAllowed { .. }
            | ApiError::BadRequest(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::Validation { .. }
            | ApiError::PipelineInvalid { .. }
            | ApiError::PipelineNotFound { .. }
            | ApiError::ExecutionNotFound { .. }
            | ApiError::JobNotFound { .. }
            | ApiError::ScheduleNotFound { .. }
            | ApiError::ScheduleNameTaken { .. }
            | ApiError::TargetBusy { .. }
            | ApiError::JobNotPending { .. }
            | ApiError::LeaseLost { .. }
            | ApiError::ResultAlreadyApplied { .. }
            | ApiError::Refused { .. }
            | ApiError::StepNotFound { .. }
            | ApiError::VoteRefused { .. }
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden { .. }
            | ApiError::NotReady(_)
            | ApiError::Store(_)
            | ApiError::Internal(_) => true,
        }
    }

    #[test]
    fn the_documented_codes_are_the_codes_errors_produce() {
        let mut produced: BTreeSet<&str> = one_of_each()
            .iter()
            .filter(|e| variant_is_listed(e))
            .map(ApiError::code)
            .collect();
        // A store failure is `STORE_UNAVAILABLE` or `INTERNAL` depending on its cause.
        produced.insert(
            ApiError::Store(StoreError::Corrupt {
                key: "k".into(),
                reason: "r".into(),
            })
            .code(),
        );
        let documented: BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(documented.len(), CODES.len(), "CODES has no duplicates");
        assert_eq!(produced, documented);
        for error in one_of_each() {
            let generic = error.title() == "Internal error";
            assert_eq!(
                generic,
                error.code() == "INTERNAL",
                "{} has its own title",
                error.code()
            );
        }
    }

    #[test]
    fn every_member_of_every_problem_is_documented() {
        let documented = property_names::<ProblemDocument>();
        for error in one_of_each() {
            let body = error.body();
            let members: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
            assert!(
                members.is_subset(&documented),
                "{}: {:?} are not in the Problem schema",
                error.code(),
                members.difference(&documented).collect::<Vec<_>>()
            );
        }
    }

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
