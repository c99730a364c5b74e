//! Wake-ups for idle workers: a Pub/Sub subscription to the notification channels of the
//! worker's queues. Scripts publish on a queue's channel whenever a job of it becomes ready,
//! so an idle worker leases new work at once instead of waiting for a poll interval.
//!
//! The same subscription carries the cancel channel: the id of a running job whose
//! execution an operator stopped, so the worker running it kills it at once.
//!
//! The subscription is a hint, not a delivery guarantee: after any reconnect the notifier
//! wakes its waiter once (work may have arrived while it was away), the worker keeps a slow
//! fallback poll, and a missed cancel is caught by the next heartbeat.
//!
//! On a Redis Cluster a `PUBLISH` (scripts publish from the master of their shard) reaches
//! the subscribers of every node, so the subscription is made on one node: the first
//! configured one that accepts it, the next one after a failure.
//!
//! [`ExternalWakeups`] does the same for external workers long-polling the HTTP API for
//! jobs of a queue's external lane: one subscription (by pattern, to the external lane
//! channel of every queue) serves every waiting request of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Store;
use crate::keys::{EXTERNAL_SEGMENT, Lane};

/// Runs `session` on a fresh Pub/Sub connection, again after each disconnect, with backoff
/// between failed attempts; `session` returns once the subscription ends. Each attempt goes
/// to the next of `nodes` (the configured nodes of a cluster; the one server otherwise).
async fn resubscribing<F, Fut>(nodes: Arc<[redis::Client]>, mut session: F)
where
    F: FnMut(redis::aio::PubSub) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut backoff = Duration::from_millis(100);
    for client in nodes.iter().cycle() {
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                if session(pubsub).await {
                    backoff = Duration::from_millis(100);
                }
                tracing::debug!("notification subscription ended; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "job notifications unavailable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A running subscription. Dropping it ends the subscription.
#[derive(Debug)]
pub struct Notifier {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifier {
    /// Subscribes to the channels of `queues` (their builtin lanes: the jobs sluice's
    /// workers run), and to the cancel channel, whose job ids are handed to `on_cancel`.
    pub fn spawn(store: &Store, queues: &[String], on_cancel: impl Fn(&str) + Send + Sync + 'static) -> Self {
        let notify = Arc::new(Notify::new());
        let cancel_channel = store.keys.cancel_channel();
        let mut channels: Vec<String> = queues.iter().map(|q| store.keys.notify_channel(q, Lane::Builtin)).collect();
        channels.push(cancel_channel.clone());
        let waker = notify.clone();
        let on_cancel = Arc::new(on_cancel);
        let task = tokio::spawn(resubscribing(store.nodes.clone(), move |mut pubsub| {
            let (channels, cancel_channel) = (channels.clone(), cancel_channel.clone());
            let (waker, on_cancel) = (waker.clone(), on_cancel.clone());
            async move {
                for c in &channels {
                    if let Err(e) = pubsub.subscribe(c).await {
                        tracing::warn!(error = %e, "cannot subscribe to job notifications");
                        return false;
                    }
                }
                // Work may have arrived while we were not listening.
                waker.notify_one();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if message.get_channel_name() == cancel_channel {
                        if let Ok(job) = message.get_payload::<String>() {
                            on_cancel(&job);
                        }
                    } else {
                        waker.notify_one();
                    }
                }
                true
            }
        }));
        Self { notify, task }
    }

    /// Completes at the next notification (or at once if one arrived since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Wake-ups for external workers waiting for jobs of a queue's external lane (long-polls of
/// the HTTP API). Dropping it ends the subscription.
#[derive(Debug)]
pub struct ExternalWakeups {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// One waker per queue somebody waits on.
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    /// Set by [`ExternalWakeups::close`].
    closed: AtomicBool,
}

impl Shared {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // A panic while holding this short lock cannot leave the map half-updated.
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes every waiter of every queue.
    fn wake_all(&self) {
        for waker in self.queues().values() {
            waker.notify_waiters();
        }
    }
}

impl Drop for ExternalWakeups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `text` with the characters Redis glob patterns give a meaning escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl ExternalWakeups {
    /// Subscribes to the external lane channel of every queue (one pattern subscription).
    /// Must be called within a Tokio runtime.
    pub fn spawn(store: &Store) -> Self {
        let shared = Arc::new(Shared::default());
        let prefix = store.keys.notify_prefix();
        let pattern = format!("{}*{}", glob_escape(&prefix), glob_escape(EXTERNAL_SEGMENT));
        let inner = shared.clone();
        let task = tokio::spawn(resubscribing(store.nodes.clone(), move |mut pubsub| {
            let (inner, pattern, prefix) = (inner.clone(), pattern.clone(), prefix.clone());
            async move {
                if let Err(e) = pubsub.psubscribe(&pattern).await {
                    tracing::warn!(error = %e, "cannot subscribe to external job notifications");
                    return false;
                }
                // Work may have arrived while we were not listening.
                inner.wake_all();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let queue = message
                        .get_channel_name()
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_suffix(EXTERNAL_SEGMENT));
                    if let Some(waker) = queue.and_then(|q| inner.queues().get(q).cloned()) {
                        waker.notify_waiters();
                    }
                }
                true
            }
        }));
        Self { shared, task }
    }

    /// The waker of `queue`'s external lane: woken (`notify_waiters`) when a job of it
    /// becomes ready, after a reconnect, and on [`ExternalWakeups::close`]. To wait without
    /// missing a wake-up, create and `enable` its `notified()` future before looking for
    /// work, and await it after finding none.
    pub fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.shared.queues();
        // Forget the queues nobody waits on any more.
        queues.retain(|_, waker| Arc::strong_count(waker) > 1);
        queues.entry(queue.to_string()).or_default().clone()
    }

    /// Ends every wait, now and later (the process is shutting down).
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake_all();
    }

    /// Whether [`ExternalWakeups::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}
