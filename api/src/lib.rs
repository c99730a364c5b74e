//! The sluice HTTP control API (`/v1`, JSON).
//!
//! [`router`] builds the whole API as an [`axum::Router`] over an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` and no socket; [`serve`] runs it on a listener
//! until a shutdown future resolves, letting in-flight requests finish. [`openapi()`] is the
//! OpenAPI 3.1 document of the same routes, which the router serves at `GET /v1/openapi.json`.
//!
//! Layout:
//! - [`auth`]: bearer tokens, roles and the one table of who may call which route; every
//!   `/v1` route is behind its layer, the probes and `/metrics` are not;
//! - [`error`]: the one place failures become `application/problem+json` responses, each
//!   with a stable `code`;
//! - `extract`: `Json`, `Path` and `Query` wrappers whose rejections are problems;
//! - `fields`: field-by-field body checks that report every problem at once;
//! - `views`: what clients see of records (no lease token, ever);
//! - `routes`: the handlers, each registered together with its documentation, grouped into
//!   the open routes (probes, metrics, the OpenAPI document) and the `/v1` API (the group the
//!   authentication layer wraps);
//! - `openapi`: the document's frame and the parts operations share.
//!
//! Invariants:
//! - every error response is a problem document with a `code`, including unknown routes
//!   (404 `NOT_FOUND`), wrong methods (405 `METHOD_NOT_ALLOWED`), oversized bodies
//!   (413 `PAYLOAD_TOO_LARGE`, limit [`BODY_LIMIT`]), invalid JSON (400 `BAD_REQUEST`) and a
//!   missing JSON content type (415 `UNSUPPORTED_MEDIA_TYPE`);
//! - handlers decide nothing about state transitions: they check input, call the store or
//!   the engine (which plan with `sluice-core` and commit atomically), and render the answer;
//! - every timestamp comes from the engine's clock;
//! - a live event stream (`GET /v1/events`) holds a Redis connection of its own and ends
//!   when its client goes away or [`serve`] begins to shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use sluice_store::Store;
use sluice_store::engine::Engine;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod error;
mod extract;
mod fields;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod openapi;
mod routes;
mod views;

pub use auth::{Auth, Caller, Role};
pub use error::ApiError;
pub use openapi::DOCUMENT_PATH;

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
    /// Cancelled when the server begins to shut down: live event streams end then, so that
    /// the graceful shutdown does not wait for their subscribers.
    closing: CancellationToken,
    /// The lease long-polls of external workers, ended by [`serve`]'s shutdown.
    long_polls: Arc<routes::workers::LongPolls>,
    /// Whether the latest readiness check passed: a failed check is logged when readiness
    /// is lost, not at every probe.
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    /// State over `engine`, with authentication disabled (every caller is an anonymous
    /// admin): for tests and loopback-only use. A deployment adds [`AppState::with_auth`].
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            auth: Auth::disabled(),
            closing: CancellationToken::new(),
            long_polls: Arc::default(),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
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

    /// Resolves when the server begins to shut down (never, outside [`serve`]).
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

/// The whole API: probes, metrics, the OpenAPI document, `/v1` routes, problem fallbacks,
/// the body limit and request logging.
pub fn router(state: AppState) -> Router {
    // The 405 fallback goes on after the authentication layer: a wrong method reaches no
    // handler, so it needs no token.
    routes::served(state.auth.clone())
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// The OpenAPI 3.1 document of [`router`]: every route it serves, generated from the same
/// registrations (served at [`DOCUMENT_PATH`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::all().into_openapi()
}

/// Every route of the `/v1` API the [`router`] serves behind the authentication layer, as
/// (method, route template), read from the OpenAPI paths of the same registrations the
/// router is built from (so a route cannot be served without being listed here). A `GET`
/// route also answers `HEAD`. The OpenAPI document itself ([`DOCUMENT_PATH`]) is open and
/// not listed.
pub fn v1_routes() -> Vec<(Method, String)> {
    let document = routes::v1().into_openapi();
    let mut routes = Vec::new();
    for (path, item) in document.paths.paths {
        let operations = [
            (Method::GET, item.get.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::DELETE, item.delete.is_some()),
            (Method::OPTIONS, item.options.is_some()),
            (Method::HEAD, item.head.is_some()),
            (Method::PATCH, item.patch.is_some()),
            (Method::TRACE, item.trace.is_some()),
        ];
        for (method, present) in operations {
            if present {
                routes.push((method, path.clone()));
            }
        }
    }
    routes
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops accepting, ends
/// the live event streams (`GET /v1/events`; their clients reconnect elsewhere or later)
/// and the lease long-polls of external workers (they answer with the jobs they have,
/// none), and waits for the other in-flight requests to finish.
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
    let closing = state.closing.child_token();
    let state = AppState {
        closing: closing.clone(),
        ..state
    };
    let long_polls = state.long_polls.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.cancel();
            long_polls.close();
        })
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
