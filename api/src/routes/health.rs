//! Liveness and readiness probes.
//!
//! `/healthz` says the process serves HTTP; it touches nothing else, so a Redis outage
//! does not get the API restarted. `/readyz` says requests can be served: Redis answers
//! and every script is loaded; load balancers stop routing to an instance that is not ready.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// The longest a readiness check waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /healthz`: 200 `{"status": "ok"}`.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 `{"status": "ok"}` when the store is ready, else 503 `NOT_READY`.
///
/// # Errors
/// [`ApiError::NotReady`].
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.engine.store().ready()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ok" }))),
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
