//! The apalis [`Backend`] over the sluice store.
//!
//! `poll_next` hands out jobs from a small buffer; when the buffer is empty it reserves a
//! batch from the builtin lane of its queues with `lease.lua` (the external lane is left to
//! external workers), never more than the worker's free slots (so one process does not
//! hoard a queue that other machines could work on), round-robin over every shard × queue
//! pair. With nothing to do it waits for a queue notification, the next delayed job's due
//! time, or the idle poll, whichever comes first. Redis errors are retried here with
//! backoff: a backend error would stop the apalis worker, and a Redis restart is routine.
//! `poll_close` releases reserved jobs that were never started.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::{Backend, BackendConfig, finalize::Ephemeral};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use sluice_store::Lane;
use tower::layer::util::Identity;

use crate::runtime::{LeasedJob, Runtime};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A worker's view of the store's queues.
pub struct StoreBackend {
    rt: Arc<Runtime>,
    buffer: VecDeque<LeasedJob>,
    fetch: Option<BoxFut<Vec<LeasedJob>>>,
    close: Option<BoxFut<()>>,
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBackend").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl StoreBackend {
    pub(crate) fn new(rt: Arc<Runtime>) -> Self {
        Self { rt, buffer: VecDeque::new(), fetch: None, close: None }
    }
}

/// Reserves the next batch, waiting as long as there is nothing to do.
async fn fetch(rt: Arc<Runtime>) -> Vec<LeasedJob> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let free = rt.free_slots().max(1);
        let mut next_due: Option<i64> = None;
        let mut failed = false;
        for (shard, queue) in rt.next_sources() {
            let now = rt.engine.now();
            let deadline = now + rt.lease_ttl_ms();
            match rt.engine.store().lease(shard, &queue, Lane::Builtin, &rt.worker_id, free, deadline, now, free).await {
                Ok(leased) => {
                    if let Some(due) = leased.next_due {
                        next_due = Some(next_due.map_or(due, |d: i64| d.min(due)));
                    }
                    if !leased.jobs.is_empty() {
                        return leased
                            .jobs
                            .into_iter()
                            .filter_map(|job| {
                                let token = job.lease.as_ref()?.token.clone();
                                rt.inflight.insert(&job.id, &token, &job.queue);
                                Some(LeasedJob { job, token })
                            })
                            .collect();
                    }
                }
                Err(e) => {
                    rt.report_store_error("lease", &e);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        backoff = Duration::from_millis(50);
        rt.set_healthy();
        let mut wait = rt.config.idle_poll;
        if let Some(due) = next_due {
            let until = u64::try_from((due - rt.engine.now()).max(0)).unwrap_or(0);
            wait = wait.min(Duration::from_millis(until));
        }
        tokio::select! {
            () = rt.notifier.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl Backend for StoreBackend {
    type Task = Task<LeasedJob>;
    type Error = Infallible;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                let id = TaskId::from_string(job.job.id.clone());
                let attempt = usize::try_from(job.job.attempts).unwrap_or(0);
                let task = TaskBuilder::new(job).task_id(id).attempt(attempt).build();
                return Poll::Ready(Some(Ok(task)));
            }
            let rt = self.rt.clone();
            let fut = self.fetch.get_or_insert_with(|| Box::pin(fetch(rt)));
            match fut.as_mut().poll(cx) {
                Poll::Ready(jobs) => {
                    self.fetch = None;
                    self.buffer.extend(jobs);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        // A lease call cut short may still reserve jobs on the server; those come back when
        // their reservation expires, without counting an attempt.
        self.fetch = None;
        if self.close.is_none() {
            let rt = self.rt.clone();
            let buffered: Vec<LeasedJob> = self.buffer.drain(..).collect();
            self.close = Some(Box::pin(async move {
                for l in buffered {
                    rt.release(&l.job.id, &l.job.queue, &l.token).await;
                }
            }));
        }
        match self.close.as_mut().map(|f| f.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl BackendConfig for StoreBackend {
    type Args = LeasedJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}
