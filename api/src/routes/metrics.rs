//! `GET /metrics`: the Prometheus exposition (text format 0.0.4) of this process's metrics
//! and of the cluster-wide figures, read from Redis at each scrape: queue depths by state,
//! the age of each queue's oldest ready job, executions by status and live workers (see
//! `docs/METRICS.md`).
//!
//! Open, like the probes: scrapers carry no token. When Redis cannot be read in time the
//! answer is still 200 with this process's own metrics, and the cluster-wide ones are left
//! out (a scrape that fails would hide the process's figures exactly when they matter).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use sluice_core::Millis;
use sluice_store::metrics::{Cluster, QueueFigures};
use sluice_store::{QueueStats, StoreError};

use crate::AppState;

/// The longest a scrape waits for the cluster-wide figures.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(3);

/// A worker counts as live while it was heard from within this long (as in the queue
/// figures of `GET /v1/queues`).
const LIVE_WITHIN_MS: Millis = super::queues::LIVE_WITHIN_MS;

/// Metrics.
///
/// This process's metrics and the cluster-wide figures read from Redis now, in the
/// Prometheus text format 0.0.4. Open: it needs no token. When Redis cannot be read, the
/// cluster-wide figures are left out.
#[utoipa::path(
    get, path = "/metrics", tag = "metrics", operation_id = "metrics.get",
    responses(
        (status = OK, description = "The metrics, in the Prometheus text format 0.0.4.",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let cluster = match tokio::time::timeout(CLUSTER_TIMEOUT, cluster(&state)).await {
        Ok(Ok(cluster)) => Some(cluster),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the cluster-wide metrics; serving this process's only");
            None
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = CLUSTER_TIMEOUT.as_millis() as u64,
                "reading the cluster-wide metrics timed out; serving this process's only"
            );
            None
        }
    };
    let body = state.store().metrics().render(cluster.as_ref());
    (
        [(header::CONTENT_TYPE, sluice_store::metrics::CONTENT_TYPE)],
        body,
    )
}

/// The cluster-wide figures, read now.
async fn cluster(state: &AppState) -> Result<Cluster, StoreError> {
    let store = state.store();
    let now = state.engine.now();
    let queues = store.queue_stats(None, now, LIVE_WITHIN_MS).await?;
    let executions = store.execution_counts().await?;
    let workers = store.workers(now).await?;
    Ok(Cluster {
        queues: queues.iter().map(figures).collect(),
        executions: executions
            .into_iter()
            .map(|(status, n)| (status.as_str(), n))
            .collect(),
        workers_live: u64::try_from(
            workers
                .iter()
                .filter(|w| now - w.last_seen <= LIVE_WITHIN_MS)
                .count(),
        )
        .unwrap_or(u64::MAX),
    })
}

fn figures(stats: &QueueStats) -> QueueFigures {
    QueueFigures {
        queue: stats.queue.clone(),
        ready: stats.ready,
        delayed: stats.delayed,
        reserved: stats.reserved,
        running: stats.running,
        oldest_ready_age: sluice_store::metrics::elapsed(0, stats.oldest_ready_age_ms.unwrap_or(0)),
        paused: stats.paused,
    }
}
