//! Liveness and readiness probes.
//!
//! `/healthz` says the process serves HTTP; it touches nothing else, so a Redis outage
//! does not get the API restarted. `/readyz` says requests can be served: Redis answers
//! and every script is loaded; load balancers stop routing to an instance that is not ready.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::error::{ApiError, NotReady};
use crate::views::{OK, Status};

/// The longest a readiness check waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Liveness.
///
/// Says the process serves HTTP; it touches nothing else.
#[utoipa::path(
    get, path = "/healthz", tag = "probes", operation_id = "health.live",
    responses(
        (status = OK, description = "The process serves HTTP.", body = Status),
    ),
)]
pub async fn healthz() -> Json<Status> {
    Json(OK)
}

/// Readiness.
///
/// Says requests can be served: Redis answers and every script is loaded.
#[utoipa::path(
    get, path = "/readyz", tag = "probes", operation_id = "health.ready",
    responses(
        (status = OK, description = "Ready to serve.", body = Status),
        (status = SERVICE_UNAVAILABLE, response = inline(NotReady)),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.engine.store().ready()).await {
        Ok(Ok(())) => Ok(Json(OK)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::NotReady(
                "Redis is unreachable or refused a script".into(),
            ))
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = READY_TIMEOUT.as_millis() as u64,
                "readiness check timed out"
            );
            Err(ApiError::NotReady(format!(
                "Redis did not answer within {} s",
                READY_TIMEOUT.as_secs()
            )))
        }
    }
}
