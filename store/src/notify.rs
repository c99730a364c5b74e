//! Wake-ups for idle workers: a Pub/Sub subscription to the notification channels of the
//! worker's queues. Scripts publish on a queue's channel whenever a job of it becomes ready,
//! so an idle worker leases new work at once instead of waiting for a poll interval.
//!
//! The subscription is a hint, not a delivery guarantee: after any reconnect the notifier
//! wakes its waiter once (work may have arrived while it was away), and the worker keeps a
//! slow fallback poll.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Store;

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
    /// Subscribes to the channels of `queues`.
    pub fn spawn(store: &Store, queues: &[String]) -> Self {
        let notify = Arc::new(Notify::new());
        let channels: Vec<String> =
            queues.iter().map(|q| format!("{}{q}", store.keys.notify_prefix())).collect();
        let client = store.client.clone();
        let waker = notify.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        let mut ok = true;
                        for c in &channels {
                            if let Err(e) = pubsub.subscribe(c).await {
                                tracing::warn!(error = %e, "cannot subscribe to job notifications");
                                ok = false;
                                break;
                            }
                        }
                        if ok {
                            backoff = Duration::from_millis(100);
                            // Work may have arrived while we were not listening.
                            waker.notify_one();
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                waker.notify_one();
                            }
                            tracing::debug!("job notification subscription ended; reconnecting");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "job notifications unavailable"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        Self { notify, task }
    }

    /// Completes at the next notification (or at once if one arrived since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
