//! Queues as operators see them: `GET /v1/queues` (every queue's figures),
//! `GET /v1/queues/{q}` (one queue's), and `POST /v1/queues/{q}/pause` / `/resume`.
//!
//! The figures come from `Store::queue_stats`, which reads small keys and bounded sets (never
//! a whole queue). A queue is known once it has held a job; asking for one that never has is
//! not an error: its figures are zero, and it can be paused before its first job arrives.
//! Pause and resume are idempotent and answer the queue's figures as they now are; pausing
//! stops leases only (jobs already running finish, enqueueing goes on).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use sluice_core::Millis;
use sluice_core::pipeline::{QUEUE_NAME_RULE, is_queue_name};
use sluice_store::QueueStats;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, BadRequest, quote};
use crate::extract::{ApiPath, ApiQuery};
use crate::views::{QueueList, QueueView};

/// A worker counts as live while it was heard from within this long (workers refresh their
/// registry entry every third of their lease TTL, 10 s by default).
pub(crate) const LIVE_WITHIN_MS: Millis = 60_000;

/// The path parameter of `/v1/queues/{q}` and the routes under it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// The queue name: 1 to 64 letters, digits, `.`, `_` or `-`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub q: String,
}

/// Query of `GET /v1/queues`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue (its figures are zero if it never held a job).
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub queue: Option<String>,
}

/// Checks a queue name given in the request as `field`; a bad one is 400 naming the field.
pub(crate) fn checked<'a>(name: &'a str, field: &str) -> Result<&'a str, ApiError> {
    if is_queue_name(name) {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(format!(
            "`{field}` `{}` is not a valid queue name; {QUEUE_NAME_RULE}",
            quote(name)
        )))
    }
}

/// The figures of `queue` (zero when it never held a job).
async fn one(state: &AppState, queue: &str) -> Result<QueueView, ApiError> {
    let stats = state
        .store()
        .queue_stats(Some(queue), state.engine.now(), LIVE_WITHIN_MS)
        .await?;
    let stats = stats
        .into_iter()
        .find(|s| s.queue == queue)
        .unwrap_or_else(|| QueueStats {
            queue: queue.to_string(),
            ..QueueStats::default()
        });
    Ok(QueueView::from(stats))
}

/// List queues with their figures.
///
/// Every queue that ever held a job, sorted by name: its jobs by status, the age of the
/// oldest ready job, whether it is paused, and the live workers serving it. With `?queue=`,
/// only that queue (listed even if it never held a job).
#[utoipa::path(
    get, path = "/v1/queues", tag = "queues", operation_id = "queues.list",
    params(ListQuery),
    responses(
        (status = OK, description = "The queues.", body = QueueList),
        (status = BAD_REQUEST, response = inline(BadRequest)),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<QueueList>, ApiError> {
    let only = match query.queue.as_deref() {
        None | Some("") => None,
        Some(q) => Some(checked(q, "queue")?),
    };
    let items = match only {
        Some(q) => vec![one(&state, q).await?],
        None => state
            .store()
            .queue_stats(None, state.engine.now(), LIVE_WITHIN_MS)
            .await?
            .into_iter()
            .map(QueueView::from)
            .collect(),
    };
    Ok(Json(QueueList { items }))
}

/// Get a queue's figures.
///
/// Its jobs by status, the age of the oldest ready job, whether it is paused, and the live
/// workers serving it. A queue that never held a job has zero figures.
#[utoipa::path(
    get, path = "/v1/queues/{q}", tag = "queues", operation_id = "queues.get",
    params(QueuePath),
    responses(
        (status = OK, description = "The queue's figures.", body = QueueView),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(QueuePath { q }): ApiPath<QueuePath>,
) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(one(&state, checked(&q, "q")?).await?))
}

/// Pauses (`true`) or resumes (`false`) `q` and answers its figures.
async fn set_paused(
    state: &AppState,
    q: &str,
    caller: &Caller,
    paused: bool,
) -> Result<Json<QueueView>, ApiError> {
    let queue = checked(q, "q")?;
    state.store().set_queue_paused(queue, paused).await?;
    tracing::info!(
        queue = %queue, actor = %caller.subject,
        "{}", if paused { "queue paused" } else { "queue resumed" }
    );
    Ok(Json(one(state, queue).await?))
}

/// Pause a queue.
///
/// Workers lease no job of the queue until it is resumed; jobs already running finish and
/// are recorded, and enqueueing goes on. Idempotent; takes no body.
#[utoipa::path(
    post, path = "/v1/queues/{q}/pause", tag = "queues", operation_id = "queues.pause",
    params(QueuePath),
    responses(
        (status = OK, description = "The queue's figures, paused.", body = QueueView),
    ),
)]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(QueuePath { q }): ApiPath<QueuePath>,
    caller: Caller,
) -> Result<Json<QueueView>, ApiError> {
    set_paused(&state, &q, &caller, true).await
}

/// Resume a queue.
///
/// Workers lease its jobs again; idle workers of the queue are woken at once. Idempotent;
/// takes no body.
#[utoipa::path(
    post, path = "/v1/queues/{q}/resume", tag = "queues", operation_id = "queues.resume",
    params(QueuePath),
    responses(
        (status = OK, description = "The queue's figures, resumed.", body = QueueView),
    ),
)]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(QueuePath { q }): ApiPath<QueuePath>,
    caller: Caller,
) -> Result<Json<QueueView>, ApiError> {
    set_paused(&state, &q, &caller, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_queue_name_is_a_400_naming_the_field() {
        assert_eq!(checked("deploy.eu-1", "q").unwrap(), "deploy.eu-1");
        let err = checked("a b", "queue").unwrap_err();
        assert_eq!(err.code(), "BAD_REQUEST");
        assert_eq!(
            err.to_string(),
            format!("`queue` `a b` is not a valid queue name; {QUEUE_NAME_RULE}")
        );
    }
}
