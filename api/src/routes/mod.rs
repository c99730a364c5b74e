//! The routes, grouped the way access control groups them.
//!
//! - [`health()`]: `/healthz` and `/readyz`, always open (probes carry no token);
//! - [`v1()`]: the `/v1` control API, built from the one list [`v1_list`] and put behind
//!   the authentication layer ([`crate::auth::protect`], one `route_layer`), so it covers
//!   every `/v1` route and nothing else. [`crate::v1_routes`] reads the same list, so a test
//!   can check that the access policy has a rule for every route served.
//!
//! Each router answers a known path with an unsupported method with a 405 problem (axum
//! adds the `Allow` header); paths that match nothing get the 404 problem of
//! [`not_found`], installed by [`crate::router`].

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{MethodFilter, MethodRouter, get, on};

use crate::AppState;
use crate::auth::{self, Auth};
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

/// One `/v1` route: a method, a route template and its handler.
pub(crate) struct V1Route {
    /// The method.
    pub(crate) method: Method,
    /// The template, as [`axum::extract::MatchedPath`] reports it.
    pub(crate) path: &'static str,
    endpoint: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> V1Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    // Only the standard methods are listed here, and each converts; a bad one would fail
    // the first test that builds the router.
    let filter =
        MethodFilter::try_from(method.clone()).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    V1Route {
        method,
        path,
        endpoint: on(filter, handler),
    }
}

/// Every `/v1` route. The router is built from this list and nothing else; each route also
/// needs a rule in [`crate::auth::POLICY`] (a test checks it; without one only `admin` may
/// call it).
pub(crate) fn v1_list() -> Vec<V1Route> {
    vec![
        route(Method::GET, "/v1/pipelines", pipelines::list),
        route(Method::PUT, "/v1/pipelines/{id}", pipelines::apply),
        route(Method::GET, "/v1/pipelines/{id}", pipelines::get),
        route(Method::POST, "/v1/executions", executions::start),
        route(Method::GET, "/v1/executions/{id}", executions::get),
        route(Method::POST, "/v1/jobs", jobs::enqueue),
        route(Method::GET, "/v1/jobs/{id}", jobs::get),
        route(Method::POST, "/v1/jobs/{id}/cancel", jobs::cancel),
    ]
}

/// The `/v1` control API, every route behind `auth`.
pub fn v1(auth: Auth) -> Router<AppState> {
    let routes = v1_list()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.endpoint));
    // The 405 fallback goes on after the authentication layer, replacing the (layered)
    // default one: a wrong method reaches no handler, so it needs no token.
    auth::protect(routes, auth).method_not_allowed_fallback(method_not_allowed)
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
