//! The store's shared connection, timed: every call through it (a command, a pipeline, a
//! script) that Redis answers is recorded in `sluice_redis_round_trip_seconds` of the
//! store's [`Metrics`]. Calls that get no answer (the connection is down or the response
//! timeout passed) are not round trips and are not recorded; the operations that fail log
//! them. Blocking reads (`XREAD BLOCK` of live event streams) use connections of their own
//! and are not timed, so that waiting for events is not mistaken for latency.
//!
//! On a Redis Cluster the connection routes each command (and each script, by its first key)
//! to the master serving its slot. A pipeline is sent to one node, so a pipeline reading
//! several shards (queue stats, the end of every shard's event stream) is split here into
//! one pipeline per slot, sent concurrently, and its replies put back in order.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use sluice_metrics::Metrics;

/// The connection under a [`TimedConnection`]: to one Redis (reconnecting with backoff), or
/// to a Redis Cluster (one connection per master, the slot map refreshed on redirections and
/// failures).
#[derive(Clone)]
pub(crate) enum Link {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// A [`Link`] that times each call. Cheap to clone; clones share the connection and the
/// metrics.
#[derive(Clone)]
pub(crate) struct TimedConnection {
    inner: Link,
    pub(crate) metrics: Arc<Metrics>,
}

impl TimedConnection {
    pub(crate) fn new(inner: Link, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// Whether this is a connection to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.inner, Link::Cluster(_))
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
            let reply = match &mut self.inner {
                Link::Single(c) => c.req_packed_command(cmd).await,
                Link::Cluster(c) => c.req_packed_command(cmd).await,
            };
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
            let reply = match &mut self.inner {
                Link::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
                Link::Cluster(c) if offset == 0 && count == pipeline.len() => by_slot(c, pipeline).await,
                Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            };
            self.record(&reply, started);
            reply
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// The slot of a command's first key (its first argument after the name), if it has one.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    match cmd.args_iter().nth(1)? {
        Arg::Simple(key) => Some(Slot::for_key(key)),
        _ => None,
    }
}

/// Runs a (non-transactional) pipeline on a cluster: as it is when its commands share one
/// slot, else as one pipeline per slot, sent concurrently, with the replies put back in the
/// order of the commands.
async fn by_slot(conn: &mut ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let mut groups: Vec<(Option<Slot>, Pipeline, Vec<usize>)> = Vec::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = slot_of(cmd);
        if let Some(group) = groups.iter_mut().find(|g| g.0 == slot) {
            group.1.add_command(cmd.clone());
            group.2.push(i);
        } else {
            let mut part = redis::pipe();
            part.add_command(cmd.clone());
            groups.push((slot, part, vec![i]));
        }
    }
    if groups.len() <= 1 {
        return conn.req_packed_commands(pipeline, 0, pipeline.len()).await;
    }
    let replies = futures::future::try_join_all(groups.iter().map(|(_, part, _)| {
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(part, 0, part.len()).await }
    }))
    .await?;
    let mut out = vec![Value::Nil; pipeline.len()];
    for ((_, _, positions), values) in groups.iter().zip(replies) {
        for (&i, value) in positions.iter().zip(values) {
            out[i] = value;
        }
    }
    Ok(out)
}
