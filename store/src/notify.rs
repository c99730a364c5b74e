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
    /// Subscribes to the channels of `queues`, and to the cancel channel, whose job ids
    /// are handed to `on_cancel`.
    pub fn spawn(store: &Store, queues: &[String], on_cancel: impl Fn(&str) + Send + Sync + 'static) -> Self {
        let notify = Arc::new(Notify::new());
        let cancel_channel = store.keys.cancel_channel();
        let mut channels: Vec<String> =
            queues.iter().map(|q| format!("{}{q}", store.keys.notify_prefix())).collect();
        channels.push(cancel_channel.clone());
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
                            while let Some(message) = messages.next().await {
                                if message.get_channel_name() == cancel_channel {
                                    if let Ok(job) = message.get_payload::<String>() {
                                        on_cancel(&job);
                                    }
                                } else {
                                    waker.notify_one();
                                }
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
