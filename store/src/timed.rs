//! The store's shared connection, timed: every call through it (a command, a pipeline, a
//! script) that Redis answers is recorded in `sluice_redis_round_trip_seconds` of the
//! store's [`Metrics`]. Calls that get no answer (the connection is down or the response
//! timeout passed) are not round trips and are not recorded; the operations that fail log
//! them. Blocking reads (`XREAD BLOCK` of live event streams) use connections of their own
//! and are not timed, so that waiting for events is not mistaken for latency.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use sluice_metrics::Metrics;

/// A [`ConnectionManager`] that times each call. Cheap to clone; clones share the
/// connection and the metrics.
#[derive(Clone)]
pub(crate) struct TimedConnection {
    inner: ConnectionManager,
    pub(crate) metrics: Arc<Metrics>,
}

impl TimedConnection {
    pub(crate) fn new(inner: ConnectionManager, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// Records the call begun at `started` if Redis answered it (with a value or an error
    /// reply).
    fn record<T>(&self, reply: &RedisResult<T>, started: Instant) {
        let answered = match reply {
            Ok(_) => true,
            Err(e) => {
                !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal())
            }
        };
        if answered {
            self.metrics.redis_round_trip(started.elapsed());
        }
    }
}

impl ConnectionLike for TimedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let started = Instant::now();
            let reply = self.inner.req_packed_command(cmd).await;
            self.record(&reply, started);
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let started = Instant::now();
            let reply = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.record(&reply, started);
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
