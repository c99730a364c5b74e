//! The sluice HTTP control API (`/v1`, JSON).
//!
//! [`router`] builds the whole API as an [`axum::Router`] over an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` and no socket; [`serve`] runs it on a listener
//! until a shutdown future resolves, letting in-flight requests finish.
//!
//! Layout:
//! - [`auth`]: bearer tokens, roles and the one table of who may call which route; every
//!   `/v1` route is behind its layer, the probes are not;
//! - [`error`]: the one place failures become `application/problem+json` responses, each
//!   with a stable `code`;
//! - `extract`: `Json`, `Path` and `Query` wrappers whose rejections are problems;
//! - `fields`: field-by-field body checks that report every problem at once;
//! - `views`: what clients see of records (no lease token, ever);
//! - `routes`: the handlers, grouped into the open probes and the `/v1` API (the router the
//!   authentication layer wraps).
//!
//! Invariants:
//! - every error response is a problem document with a `code`, including unknown routes
//!   (404 `NOT_FOUND`), wrong methods (405 `METHOD_NOT_ALLOWED`), oversized bodies
//!   (413 `PAYLOAD_TOO_LARGE`, limit [`BODY_LIMIT`]), invalid JSON (400 `BAD_REQUEST`) and a
//!   missing JSON content type (415 `UNSUPPORTED_MEDIA_TYPE`);
//! - handlers decide nothing about state transitions: they check input, call the store or
//!   the engine (which plan with `sluice-core` and commit atomically), and render the answer;
//! - every timestamp comes from the engine's clock.

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use sluice_store::Store;
use sluice_store::engine::Engine;

pub mod auth;
pub mod error;
mod extract;
mod fields;
mod routes;
mod views;

pub use auth::{Auth, Caller, Role};
pub use error::ApiError;

/// Largest request body accepted, in bytes (1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppState {
    /// The store and the clock; handlers reach Redis only through it.
    pub engine: Engine,
    /// Who may call what.
    pub auth: Auth,
}

impl AppState {
    /// State over `engine`, with authentication disabled (every caller is an anonymous
    /// admin): for tests and loopback-only use. A deployment adds [`AppState::with_auth`].
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            auth: Auth::disabled(),
        }
    }

    /// The same state with `auth` as its authentication settings.
    #[must_use]
    pub fn with_auth(self, auth: Auth) -> Self {
        Self { auth, ..self }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.engine.store()
    }
}

/// The whole API: probes, `/v1` routes, problem fallbacks, the body limit and request
/// logging.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health())
        .merge(routes::v1(state.auth.clone()))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Every `/v1` route the [`router`] serves, as (method, route template), from the same list
/// the router is built from. A `GET` route also answers `HEAD`.
pub fn v1_routes() -> Vec<(Method, &'static str)> {
    routes::v1_list()
        .into_iter()
        .map(|route| (route.method, route.path))
        .collect()
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops accepting and
/// waits for in-flight requests to finish.
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(api.listen = %addr, "HTTP API listening"),
        Err(e) => tracing::warn!(error = %e, "HTTP API listening on an unknown address"),
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("HTTP API stopped");
    Ok(())
}

/// Logs one line per request (route template, not the raw path, so ids do not flood the
/// log). Failures are logged where they are handled ([`ApiError`]); this is the access log.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    tracing::debug!(
        http.method = %method,
        http.route = %route,
        http.status = response.status().as_u16(),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request served"
    );
    response
}
