//! The sluice scheduler service.
//!
//! Each tick, for every shard:
//! - **promote**: move due delayed jobs (retry backoffs, delayed enqueues) of both lanes of
//!   every known queue to their ready sets, in bounded chunks (`promote.lua`);
//! - **reclaim**: return expired reservations to their queues and settle expired running
//!   jobs as failed attempts, retried after their backoff or failed for good once their
//!   attempts are spent (`reclaim.lua` + the engine's settle under the expired token).
//!
//! Every operation is idempotent and fenced, so any number of scheduler processes may run at
//! once; running several only adds redundancy. Workers also promote due jobs of the queue
//! they lease from, so the scheduler is the backstop, not the only path.

use std::future::Future;
use std::time::Duration;

use sluice_store::{Lane, Pulse, StoreError};
use sluice_store::engine::Engine;

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between ticks.
    pub tick: Duration,
    /// Jobs moved or reclaimed per script call (bounds how long one call holds Redis).
    pub chunk: usize,
    /// Most chunks per queue and tick (bounds one tick's work; the rest waits a tick).
    pub max_chunks: usize,
    /// Beaten after every tick that succeeded: a supervisor (the systemd watchdog) reads it
    /// to tell a scheduler that makes progress from one that is stuck or cut off from Redis.
    pub pulse: Pulse,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { tick: Duration::from_millis(500), chunk: 1_000, max_chunks: 50, pulse: Pulse::new() }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Delayed jobs made ready.
    pub promoted: usize,
    /// Expired reservations returned to their queues.
    pub released: usize,
    /// Expired running jobs settled as failed attempts.
    pub reclaimed: usize,
}

/// Runs one tick over every shard.
///
/// # Errors
/// Redis errors (the caller retries on the next tick).
pub async fn tick(engine: &Engine, config: &SchedulerConfig) -> Result<TickReport, StoreError> {
    let store = engine.store();
    let mut report = TickReport::default();
    for shard in 0..store.shards() {
        for queue in store.queues(shard).await? {
            for lane in Lane::ALL {
                for _ in 0..config.max_chunks {
                    let moved = store.promote(shard, &queue, lane, engine.now(), config.chunk).await?;
                    report.promoted += moved;
                    if moved < config.chunk {
                        break;
                    }
                }
            }
        }
        for _ in 0..config.max_chunks {
            let (released, reclaimed) = engine.reclaim(shard, config.chunk).await?;
            report.released += released;
            report.reclaimed += reclaimed;
            if released + reclaimed < config.chunk {
                break;
            }
        }
    }
    Ok(report)
}

/// Ticks until `shutdown` completes. Redis errors are logged once per outage and retried
/// on the next tick.
pub async fn run(engine: Engine, config: SchedulerConfig, shutdown: impl Future<Output = ()> + Send) {
    tokio::pin!(shutdown);
    let mut healthy = true;
    tracing::info!(tick_ms = config.tick.as_millis() as u64, "scheduler started");
    loop {
        match tick(&engine, &config).await {
            Ok(report) => {
                config.pulse.beat();
                if !healthy {
                    tracing::info!("redis is reachable again");
                    healthy = true;
                }
                if report != TickReport::default() {
                    tracing::debug!(
                        promoted = report.promoted,
                        released = report.released,
                        reclaimed = report.reclaimed,
                        "scheduler tick"
                    );
                }
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %e, "scheduler tick failed; retrying");
                    healthy = false;
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.tick) => {}
        }
    }
    tracing::info!("scheduler stopped");
}
