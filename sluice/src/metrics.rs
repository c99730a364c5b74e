//! The metrics endpoint of `sluice worker` and `sluice scheduler` (`--metrics-listen ADDR`,
//! `metrics.listen`): a small HTTP server that answers `GET /metrics` with the process's
//! own metrics in the Prometheus text format, the probes `GET /healthz` (the process serves
//! HTTP: always 200) and `GET /readyz` (200 while the role's latest round against Redis
//! succeeded, 503 `NOT_READY` while Redis does not answer it: see [`Pulse`]), and 404 to
//! anything else. `sluice health --api http://ADDR` probes them. The API needs none: it
//! serves `/metrics` and its probes on its own address.
//!
//! The address is bound and served before Redis is reached, so that a taken port or a bad
//! address stops the start at once and a probe says "not ready" while Redis cannot be
//! reached; the server runs until the role has returned (its drain included) and is joined
//! before the process exits.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use sluice_store::{Metrics, Pulse};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The metrics address, bound (or nothing, when `metrics.listen` is not set).
#[derive(Debug)]
pub struct Endpoint(Option<TcpListener>);

/// The running server (or nothing), and what stops it.
#[derive(Debug)]
pub struct Serving(Option<(JoinHandle<()>, CancellationToken)>);

impl Endpoint {
    /// Binds `metrics.listen` when it is set.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(c: &Config) -> anyhow::Result<Self> {
        let Some(listen) = &c.metrics.listen else {
            return Ok(Self(None));
        };
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (metrics.listen)"))?;
        Ok(Self(Some(listener)))
    }

    /// Serves `metrics`, and readiness from `pulse`, until [`Serving::stopped`].
    pub fn serve(self, metrics: Arc<Metrics>, pulse: Pulse) -> Serving {
        let Some(listener) = self.0 else {
            return Serving(None);
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(metrics.listen = %addr, "serving metrics at /metrics");
        }
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router(metrics, pulse))
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
        Serving(Some((task, token)))
    }
}

impl Serving {
    /// Stops the server and waits for it.
    pub async fn stopped(self) {
        if let Some((task, stop)) = self.0 {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// What the endpoint's handlers read.
#[derive(Clone)]
struct Probe {
    metrics: Arc<Metrics>,
    pulse: Pulse,
}

/// `GET /metrics`, `GET /healthz`, `GET /readyz` and nothing else.
fn router(metrics: Arc<Metrics>, pulse: Pulse) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Probe { metrics, pulse })
}

async fn scrape(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, sluice_store::metrics::CONTENT_TYPE)],
        probe.metrics.render(None),
    )
}

/// Liveness: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Readiness: the role's latest round against Redis succeeded. Otherwise a problem document
/// like the API's (`NOT_READY`, 503, `Retry-After`).
async fn readyz(State(probe): State<Probe>) -> axum::response::Response {
    if probe.pulse.is_ready() {
        return axum::Json(json!({ "status": "ok" })).into_response();
    }
    let problem = json!({
        "type": "about:blank",
        "code": "NOT_READY",
        "title": "Not ready",
        "status": 503,
        "detail": "Redis does not answer this process's rounds; it retries with backoff",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "1"),
        ],
        problem.to_string(),
    )
        .into_response()
}
