//! The worker service: an apalis `Monitor` running one worker over [`StoreBackend`], with
//! the tower layers every job goes through (tracing, catch-panic, a time ceiling,
//! concurrency), a heartbeat task, and the shutdown sequence.
//!
//! Shutdown (one tree, owned by the caller's `shutdown` future): stop leasing; let in-flight
//! jobs finish until `shutdown_timeout` (heartbeats continue meanwhile, so no lease expires
//! under a draining job); then drop what is still running (its process group is killed) and
//! release every job still held back to its queue, without counting the attempt.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use sluice_store::{LeaseState, WorkerInfo};
use sluice_store::engine::Engine;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::WorkerConfig;
use crate::backend::StoreBackend;
use crate::runtime::{LeasedJob, Runtime};

/// Errors that stop the worker service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration cannot work.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// The HTTP client of the executors cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

async fn handle(leased: LeasedJob, rt: Data<Arc<Runtime>>) -> Result<(), std::convert::Infallible> {
    let span = tracing::info_span!(
        "job",
        job.id = %leased.job.id,
        queue = %leased.job.queue,
        kind = %leased.job.kind,
        execution.id = leased.job.execution_id.as_deref().unwrap_or(""),
    );
    rt.0.run(leased).instrument(span).await;
    Ok(())
}

/// Extends every held lease every third of the lease TTL (or every liveness interval, when
/// that is shorter) until `stop`. Each round refreshes the worker's registry entry, so a
/// round that succeeds beats the pulse even when no lease is held.
async fn heartbeat(rt: Arc<Runtime>, stop: CancellationToken) {
    let mut every = (rt.config.lease_ttl / 3).max(Duration::from_millis(50));
    if let Some(liveness) = rt.config.liveness_interval {
        every = every.min(liveness);
    }
    let info = WorkerInfo {
        id: rt.worker_id.clone(),
        queues: rt.config.queues.clone(),
        concurrency: u32::try_from(rt.config.concurrency).unwrap_or(u32::MAX),
        host: crate::host_name(),
        pid: std::process::id(),
        started_at: rt.engine.now(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        last_seen: 0,
    };
    register(&rt, &info).await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        register(&rt, &info).await;
        let leases = rt.inflight.leases();
        if leases.is_empty() {
            continue;
        }
        let deadline = rt.engine.now() + rt.lease_ttl_ms();
        match rt.engine.store().heartbeat(&leases, deadline).await {
            Ok(held) => {
                rt.set_healthy();
                for ((id, _), state) in leases.iter().zip(held) {
                    match state {
                        LeaseState::Held => {}
                        LeaseState::CancelRequested => rt.inflight.stop(id),
                        LeaseState::Lost => {
                            tracing::warn!(job.id = %id, "lease lost; stopping the job");
                            rt.inflight.lost(id);
                        }
                    }
                }
            }
            Err(e) => rt.report_store_error("heartbeat", &e),
        }
    }
}

/// Refreshes this worker's entry in the registry shown by queue stats.
async fn register(rt: &Runtime, info: &WorkerInfo) {
    let info = WorkerInfo { last_seen: rt.engine.now(), ..info.clone() };
    let ttl = u64::try_from(rt.config.lease_ttl.as_millis()).unwrap_or(u64::MAX).saturating_mul(3);
    match rt.engine.store().register_worker(&info, ttl).await {
        Ok(()) => rt.set_healthy(),
        Err(e) => rt.report_store_error("register worker", &e),
    }
}

/// Prepares a worker; call [`Worker::run`] to start it.
#[derive(Debug)]
pub struct Worker {
    rt: Arc<Runtime>,
}

impl Worker {
    /// A worker over `engine` with `config`.
    ///
    /// # Errors
    /// [`WorkerError::Config`] when the configuration cannot work,
    /// [`WorkerError::HttpClient`] when the HTTP client cannot be built.
    pub fn new(engine: Engine, config: WorkerConfig) -> Result<Self, WorkerError> {
        config.check().map_err(WorkerError::Config)?;
        let rt = Runtime::new(engine, config).map_err(WorkerError::HttpClient)?;
        Ok(Self { rt: Arc::new(rt) })
    }

    /// Runs until `shutdown` completes, then shuts down gracefully (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let rt = self.rt;
        let stop_heartbeat = CancellationToken::new();
        let beat = tokio::spawn(heartbeat(rt.clone(), stop_heartbeat.clone()));
        let factory_rt = rt.clone();
        let monitor = Monitor::new()
            .register(move |restarts| {
                WorkerBuilder::new(format!("{}-{restarts}", factory_rt.worker_id))
                    .backend(StoreBackend::new(factory_rt.clone()))
                    // Outermost first: a job waiting for a slot does not spend its time
                    // ceiling, and the ceiling wraps the traced span (as apalis checks).
                    .concurrency(factory_rt.config.concurrency)
                    .timeout(factory_rt.config.job_time_ceiling)
                    .enable_tracing()
                    .catch_panic()
                    .data(factory_rt.clone())
                    .build(handle)
            })
            .should_restart(|_ctx, e| {
                tracing::error!(error = %e, "worker loop stopped; restarting it");
                true
            })
            .shutdown_timeout(rt.config.shutdown_timeout);
        let signal_rt = rt.clone();
        let signal = async move {
            shutdown.await;
            signal_rt.shutting_down.store(true, Ordering::SeqCst);
            tracing::info!(
                held = signal_rt.inflight.len(),
                "shutting down: no new jobs; waiting for running ones"
            );
            Ok::<(), std::io::Error>(())
        };
        tracing::info!(
            worker.id = %rt.worker_id,
            queues = ?rt.config.queues,
            concurrency = rt.config.concurrency,
            "worker started"
        );
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::error!(error = %e, "worker monitor ended with an error");
        }
        rt.shutting_down.store(true, Ordering::SeqCst);
        let left = rt.inflight.drain();
        if !left.is_empty() {
            tracing::info!(jobs = left.len(), "shutdown timeout reached; releasing unfinished jobs");
        }
        for (id, queue, token) in left {
            rt.release(&id, &queue, &token).await;
        }
        stop_heartbeat.cancel();
        let _ = beat.await;
        if let Err(e) = rt.engine.store().unregister_worker(&rt.worker_id).await {
            tracing::debug!(error = %e, "cannot remove the worker from the registry");
        }
        tracing::info!(worker.id = %rt.worker_id, "worker stopped");
    }
}
