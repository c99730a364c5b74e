//! The jobs this worker process holds: reserved in its prefetch buffer or running.
//!
//! The heartbeat extends every lease listed here; a lease found lost is cancelled here (the
//! running process is stopped and its result will be refused anyway); a job whose execution
//! an operator stopped is cancelled too but stays listed, so its runner settles it; on
//! shutdown whatever is still listed is released back to its queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Entry {
    token: String,
    queue: String,
    cancel: CancellationToken,
    stopped: bool,
}

/// Shared registry of held jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inflight {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this short lock cannot leave the map half-updated.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a reserved job; returns the token that cancels its work.
    pub(crate) fn insert(&self, id: &str, token: &str, queue: &str) -> CancellationToken {
        let cancel = CancellationToken::new();
        self.lock().insert(
            id.to_string(),
            Entry { token: token.to_string(), queue: queue.to_string(), cancel: cancel.clone(), stopped: false },
        );
        cancel
    }

    /// The cancellation token of a held job.
    pub(crate) fn cancel_token(&self, id: &str) -> Option<CancellationToken> {
        self.lock().get(id).map(|e| e.cancel.clone())
    }

    /// Forgets a job (settled, released or dropped).
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Every held `(id, token)`.
    pub(crate) fn leases(&self) -> Vec<(String, String)> {
        self.lock().iter().map(|(id, e)| (id.clone(), e.token.clone())).collect()
    }

    /// The lease of `id` was lost: stop its work and forget it.
    pub(crate) fn lost(&self, id: &str) {
        if let Some(e) = self.lock().remove(id) {
            e.cancel.cancel();
        }
    }

    /// The job's execution was stopped by an operator: stop its work (the runner then
    /// settles it as cancelled). Unknown ids (held by another worker) are ignored.
    pub(crate) fn stop(&self, id: &str) {
        if let Some(e) = self.lock().get_mut(id) {
            e.stopped = true;
            e.cancel.cancel();
        }
    }

    /// Whether an operator stopped the job (as opposed to its lease being lost).
    pub(crate) fn is_stopped(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.stopped)
    }

    /// Takes every held job as `(id, queue, token)`.
    pub(crate) fn drain(&self) -> Vec<(String, String, String)> {
        self.lock().drain().map(|(id, e)| (id, e.queue, e.token)).collect()
    }

    /// How many jobs are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
