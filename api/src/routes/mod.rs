//! The routes and their documentation, registered together.
//!
//! Each handler carries a `#[utoipa::path(...)]` attribute (method, path, parameters,
//! request body, responses) and is registered with `routes!(handler)` in one of the groups
//! below. That one call adds the route to the axum router and the operation to the OpenAPI
//! document, so the two cannot drift; `api/tests/openapi.rs` also probes every documented
//! operation on the real router.
//!
//! The groups are the way access control groups the routes:
//! - [`open()`]: `/healthz`, `/readyz`, `/metrics` and the OpenAPI document, always open
//!   (probes, scrapers and clients discovering the API carry no token);
//! - [`v1()`]: the `/v1` control API. [`all`] marks its operations as requiring the bearer
//!   token, and [`served`] puts the group behind the authentication layer
//!   ([`crate::auth::protect`], one `route_layer`), so both cover every `/v1` route and
//!   nothing else. [`crate::v1_routes`] reads the routes from the document of [`all`], so a
//!   test can check that the access policy has a rule for every route served.
//!
//! # Adding a route
//!
//! 1. Write the handler in the module of its resource with `#[utoipa::path(...)]`: the
//!    method and path (as axum writes it, `{id}`), `tag`, `operation_id` (the operation key
//!    of the specification, e.g. `controlPlane.execution.cancel`), `params(...)`,
//!    `request_body = ...`, and `responses(...)` with each success body and each problem the
//!    handler itself returns, as `(status = NOT_FOUND, response = inline(JobNotFound))`
//!    (one response type per `code`, in [`crate::error`]; a new code gets one there).
//!    Problems shared by a whole class of operations are added by [`crate::openapi`]:
//!    400/413/415 for JSON bodies, 400 for path parameters, and 500/503 for every `/v1`
//!    operation. Responses are typed views
//!    (`ToSchema`, in `views`); a body the handler checks field by field gets a
//!    documentation-only `ToSchema` struct beside the handler and a test that its fields
//!    are the ones the handler accepts.
//! 2. Register it: `.routes(routes!(module::handler))` in [`v1()`] (or [`open()`] for a
//!    route that needs no token). Handlers of one path go in one `routes!(a, b)`.
//!
//! Each path answers a method it does not have with a 405 problem (axum adds the `Allow`
//! header), and paths that match nothing get the 404 problem of [`not_found`]; both are
//! installed by [`crate::router`].

use axum::Router;
use axum::http::{Method, Uri};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Auth};
use crate::error::{ApiError, quote};
use crate::{AppState, openapi};

pub mod actions;
pub mod approvals;
pub mod events;
pub mod executions;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod pipelines;
pub mod queues;
pub mod schedules;
pub mod workers;

/// The routes that need no token: the probes, the metrics and the OpenAPI document.
pub fn open() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::document))
}

/// The `/v1` control API.
pub fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(pipelines::list))
        .routes(routes!(pipelines::apply, pipelines::get))
        .routes(routes!(executions::start, actions::list))
        .routes(routes!(executions::get))
        .routes(routes!(actions::cancel))
        .routes(routes!(actions::retry))
        .routes(routes!(actions::restart))
        .routes(routes!(actions::pause))
        .routes(routes!(actions::resume))
        .routes(routes!(actions::events))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .routes(routes!(approvals::request_changes))
        .routes(routes!(events::stream))
        .routes(routes!(jobs::enqueue))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(queues::list))
        .routes(routes!(queues::get))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::get, schedules::update, schedules::delete))
        .routes(routes!(schedules::run_now))
        .routes(routes!(schedules::runs))
        .routes(routes!(workers::lease))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::result))
}

/// Every route with its documentation: [`open()`] and [`v1()`], the latter marked as
/// requiring the bearer token, in the document's frame ([`openapi::base`]).
pub fn all() -> OpenApiRouter<AppState> {
    let mut v1 = v1();
    openapi::protect(v1.get_openapi_mut());
    let mut all = OpenApiRouter::with_openapi(openapi::base())
        .merge(open())
        .merge(v1);
    openapi::add_request_problems(all.get_openapi_mut());
    openapi::name_timestamps(all.get_openapi_mut());
    all
}

/// The router of every route in [`all`]: [`open()`] as it is, [`v1()`] behind the
/// authentication layer of `auth`.
///
/// The 405 fallback ([`crate::router`] adds it) goes on after the authentication layer,
/// replacing the (layered) default one: a wrong method reaches no handler, so it needs no
/// token.
pub fn served(auth: Auth) -> Router<AppState> {
    let (open, _) = open().split_for_parts();
    let (v1, _) = v1().split_for_parts();
    open.merge(auth::protect(v1, auth))
}

/// Default page size of the listings.
pub(crate) const DEFAULT_PAGE: usize = 20;

/// The page size a listing's `limit` asks for: 1 to [`sluice_store::MAX_PAGE`], default
/// [`DEFAULT_PAGE`].
pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    let max = sluice_store::MAX_PAGE;
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!("`limit` must be between 1 and {max}, not {limit}")))
    }
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
