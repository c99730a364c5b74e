//! Liveness and readiness probes.
//!
//! `/healthz` says the process serves HTTP; it touches nothing else, so a Redis outage
//! does not get the API restarted. `/readyz` says requests can be served: Redis answers
//! and every script is loaded; load balancers stop routing to an instance that is not ready.

use std::sync::atomic::Ordering;
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
    let failure = match tokio::time::timeout(READY_TIMEOUT, state.engine.store().ready()).await {
        Ok(Ok(())) => {
            if !state.ready.swap(true, Ordering::Relaxed) {
                tracing::info!("ready again: redis answers");
            }
            return Ok(Json(OK));
        }
        Ok(Err(e)) => (
            e.to_string(),
            "Redis is unreachable or refused a script".to_string(),
        ),
        Err(_) => (
            format!("no answer within {} ms", READY_TIMEOUT.as_millis()),
            format!("Redis did not answer within {} s", READY_TIMEOUT.as_secs()),
        ),
    };
    // Logged when readiness is lost, not at every probe of a load balancer.
    if state.ready.swap(false, Ordering::Relaxed) {
        tracing::warn!(error = %failure.0, "not ready: the readiness check failed; probes answer 503 until redis answers");
    }
    Err(ApiError::NotReady(failure.1))
}
