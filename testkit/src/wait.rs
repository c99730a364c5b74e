//! Polling with a deadline: the last resort for effects that cannot be awaited directly.
//!
//! The deadline is measured on the wall clock ([`std::time::Instant`]), not on tokio's clock:
//! the effects waited for are real (processes, sockets, Redis), so a paused tokio clock must
//! not make the wait time out early.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the condition is polled.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `f` every 20 ms until it returns `Some`, and returns that value.
///
/// Use this only when there is no event to await (a process exiting on its own, a row
/// appearing in Redis written by another process). Keep `deadline` generous: it only bounds
/// how long a *failing* test takes.
///
/// # Panics
/// With `timed out after {deadline:?}: waiting for {what}` when `deadline` passes.
pub async fn wait_until<F, Fut, T>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        if Instant::now() >= until {
            panic!("timed out after {deadline:?}: waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The blocking twin of [`wait_until`], for synchronous tests. Blocks the calling thread.
///
/// # Panics
/// With `timed out after {deadline:?}: waiting for {what}` when `deadline` passes.
pub fn wait_until_sync<F, T>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Option<T>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= until {
            panic!("timed out after {deadline:?}: waiting for {what}");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_some() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(5), "third call", || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn panics_after_the_deadline() {
        wait_until(Duration::from_millis(50), "nothing", || async {
            None::<()>
        })
        .await;
    }

    #[test]
    fn sync_twin_works_and_times_out() {
        let mut calls = 0;
        assert_eq!(
            wait_until_sync(Duration::from_secs(5), "second call", || {
                calls += 1;
                (calls == 2).then_some("ok")
            }),
            "ok"
        );
        let err = std::panic::catch_unwind(|| {
            wait_until_sync(Duration::from_millis(30), "never", || None::<()>);
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.starts_with("timed out after") && msg.ends_with("waiting for never"),
            "{msg}"
        );
    }
}
