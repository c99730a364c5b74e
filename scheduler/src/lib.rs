//! The sluice scheduler service.
//!
//! Each tick, for every shard:
//! - **fire**: start the executions of the schedules that are due (`fire_schedule.lua`
//!   through the engine), found by one range query on the shard's due set and handled in
//!   bounded chunks. Each fire claims its due time in the same script that starts the
//!   execution, so a due time fires once whatever the number of schedulers; a fire skipped
//!   while its target is busy is looked at again on the next tick;
//! - **promote**: move due delayed jobs (retry backoffs, delayed enqueues) of both lanes of
//!   every known queue to their ready sets, in bounded chunks (`promote.lua`);
//! - **reclaim**: return expired reservations to their queues and settle expired running
//!   jobs as failed attempts, retried after their backoff or failed for good once their
//!   attempts are spent (`reclaim.lua` + the engine's settle under the expired token).
//!
//! After an outage (ticks that Redis did not answer), reclaiming waits `reclaim_grace`
//! (promoting and firing resume at once): the workers' leases expired during the outage only
//! because their heartbeats could not reach Redis either, and a live worker renews them
//! within a third of its lease TTL once Redis answers; a worker that died meanwhile has its
//! jobs reclaimed after the grace.
//!
//! Every operation is idempotent and fenced, so any number of scheduler processes may run at
//! once; running several only adds redundancy. Workers also promote due jobs of the queue
//! they lease from, so the scheduler is the backstop, not the only path.

use std::future::Future;
use std::time::{Duration, Instant};

use sluice_store::{FireReport, Lane, Pulse, StoreError};
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
    /// Beaten after every tick that succeeded, missed after every tick Redis did not answer:
    /// a supervisor reads it to tell a scheduler that runs from one that is stuck (the
    /// systemd watchdog), and a ready scheduler from one cut off from Redis (its readiness
    /// probe and systemd status).
    pub pulse: Pulse,
    /// Due schedules fired per chunk (each costs a few round trips).
    pub fire_chunk: usize,
    /// How long reclaiming waits after Redis answers again following failed ticks (see the
    /// module docs): at least the workers' lease TTL. Default: 30 s.
    pub reclaim_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            chunk: 1_000,
            max_chunks: 50,
            fire_chunk: 100,
            pulse: Pulse::new(),
            reclaim_grace: Duration::from_secs(30),
        }
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
    /// Due schedules fired, skipped, dropped and failed.
    pub schedules: FireReport,
}

/// Runs one tick over every shard.
///
/// # Errors
/// Redis errors (the caller retries on the next tick).
pub async fn tick(engine: &Engine, config: &SchedulerConfig) -> Result<TickReport, StoreError> {
    tick_with(engine, config, true).await
}

/// One tick; expired leases are reclaimed only when `reclaim` is set.
async fn tick_with(
    engine: &Engine,
    config: &SchedulerConfig,
    reclaim: bool,
) -> Result<TickReport, StoreError> {
    let store = engine.store();
    let mut report = TickReport::default();
    for shard in 0..store.shards() {
        let now = engine.now();
        for _ in 0..config.max_chunks {
            let (fired, looked) = engine.fire_due(shard, now, config.fire_chunk).await?;
            report.schedules.fired += fired.fired;
            report.schedules.skipped += fired.skipped;
            report.schedules.dropped += fired.dropped;
            report.schedules.failed += fired.failed;
            if looked < config.fire_chunk {
                break;
            }
        }
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
        for _ in 0..if reclaim { config.max_chunks } else { 0 } {
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
/// on the next tick; after an outage, reclaiming waits `reclaim_grace`.
pub async fn run(
    engine: Engine,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut healthy = true;
    let mut reclaim_from: Option<Instant> = None;
    tracing::info!(
        tick_ms = config.tick.as_millis() as u64,
        "scheduler started"
    );
    loop {
        let reclaim = healthy && reclaim_from.is_none_or(|from| Instant::now() >= from);
        match tick_with(&engine, &config, reclaim).await {
            Ok(report) => {
                config.pulse.beat();
                if !healthy {
                    reclaim_from = Some(Instant::now() + config.reclaim_grace);
                    tracing::info!(
                        reclaim_grace_ms =
                            u64::try_from(config.reclaim_grace.as_millis()).unwrap_or(u64::MAX),
                        "redis is reachable again; expired leases are reclaimed after the grace, \
                         once live workers have renewed theirs"
                    );
                    healthy = true;
                }
                if reclaim && reclaim_from.take().is_some() {
                    tracing::info!("reclaiming expired leases again");
                }
                if report != TickReport::default() {
                    tracing::debug!(
                        promoted = report.promoted,
                        released = report.released,
                        reclaimed = report.reclaimed,
                        fired = report.schedules.fired,
                        skipped = report.schedules.skipped,
                        dropped = report.schedules.dropped,
                        failed = report.schedules.failed,
                        "scheduler tick"
                    );
                }
            }
            Err(e) => {
                config.pulse.miss();
                if healthy {
                    tracing::warn!(error = %e, "scheduler tick failed: redis is unavailable; retrying every tick");
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
