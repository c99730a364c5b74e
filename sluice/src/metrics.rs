//! The metrics endpoint of `sluice worker` and `sluice scheduler` (`--metrics-listen ADDR`,
//! `metrics.listen`): a small HTTP server that answers `GET /metrics` with the process's
//! own metrics in the Prometheus text format, and 404 to anything else. The API needs none:
//! it serves `/metrics` on its own address, with the cluster-wide figures as well.
//!
//! The address is bound before Redis is reached, so that a taken port or a bad address
//! stops the start at once; the server runs until the process's shutdown begins and is
//! joined before the process exits.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use sluice_store::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The metrics address, bound (or nothing, when `metrics.listen` is not set).
#[derive(Debug)]
pub struct Endpoint(Option<TcpListener>);

/// The running server (or nothing).
#[derive(Debug)]
pub struct Serving(Option<JoinHandle<()>>);

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

    /// Serves `metrics` until `shutdown` is cancelled.
    pub fn serve(self, metrics: Arc<Metrics>, shutdown: &CancellationToken) -> Serving {
        let Some(listener) = self.0 else {
            return Serving(None);
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(metrics.listen = %addr, "serving metrics at /metrics");
        }
        let stop = shutdown.clone();
        Serving(Some(tokio::spawn(async move {
            let served = axum::serve(listener, router(metrics))
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        })))
    }
}

impl Serving {
    /// Waits for the server to stop (after the shutdown began).
    pub async fn stopped(self) {
        if let Some(task) = self.0 {
            let _ = task.await;
        }
    }
}

/// `GET /metrics` and nothing else.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, sluice_store::metrics::CONTENT_TYPE)],
        metrics.render(None),
    )
}
