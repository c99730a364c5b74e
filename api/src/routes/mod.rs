//! The routes, grouped the way access control will group them.
//!
//! - [`health()`]: `/healthz` and `/readyz`, always open (probes carry no token);
//! - [`v1()`]: the `/v1` control API. Authentication (a later change) is one
//!   `.route_layer(...)` on this router, so it covers every `/v1` route and nothing else.
//!
//! Each router answers a known path with an unsupported method with a 405 problem (axum
//! adds the `Allow` header); paths that match nothing get the 404 problem of
//! [`not_found`], installed by [`crate::router`].

use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::{ApiError, quote};

pub mod executions;
pub mod health;
pub mod jobs;
pub mod pipelines;

/// The probes.
pub fn health() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .method_not_allowed_fallback(method_not_allowed)
}

/// The `/v1` control API.
pub fn v1() -> Router<AppState> {
    Router::new()
        .route("/v1/pipelines", get(pipelines::list))
        .route(
            "/v1/pipelines/{id}",
            put(pipelines::apply).get(pipelines::get),
        )
        .route("/v1/executions", post(executions::start))
        .route("/v1/executions/{id}", get(executions::get))
        .route("/v1/jobs", post(jobs::enqueue))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .method_not_allowed_fallback(method_not_allowed)
}

/// The answer to a path no route matches.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        path: quote(uri.path()),
    }
}

/// The answer to a known path with an unsupported method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: quote(uri.path()),
    }
}
