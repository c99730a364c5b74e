//! Reads for operators: executions listed through their indexes with cursor pagination, and
//! the event streams.
//!
//! **Listing.** Executions are indexed per shard by creation time, in one set of all of them
//! and in sets per status, pipeline and target. A listing walks the most selective index
//! that matches the filter, newest first, checks the other filters on each candidate, and
//! merges the shards. The cursor is the position of the last item returned
//! (`<created_at>.<id>`); the next page starts strictly after it, so items created meanwhile
//! never shift a page.
//!
//! **Events.** Each shard has one stream. An [`EventCursor`] is the position in every shard's
//! stream, written as the stream ids joined by commas (with one shard, simply the stream
//! id, e.g. `1732200000000-0`); every event carries the cursor just after it, so a client
//! resumes from the last event it saw. `0` is the start of every stream (the oldest events
//! kept), and [`Store::latest_event_cursor`] gives the current end, from which a live
//! subscriber sees only new events. An execution's own events are also kept in a list
//! beside it, read without touching the stream.

use std::collections::HashMap;
use std::fmt;

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use serde::Serialize;
use serde_json::Value;
use sluice_core::{Execution, ExecutionStatus, ids};

use crate::{Store, StoreError, codec};

/// Largest page of a listing.
pub const MAX_PAGE: usize = 200;

/// What a listing asks for; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only executions in this status.
    pub status: Option<ExecutionStatus>,
    /// Only executions of this pipeline.
    pub pipeline: Option<String>,
    /// Only executions of this target.
    pub target: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The executions, newest first.
    pub items: Vec<Execution>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A listing position: creation time and id of the last item returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    created_at: i64,
    id: String,
}

impl ListCursor {
    /// Parses `<created_at>.<id>`; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        ids::shard_of(id, ids::EXECUTION).ok()?;
        Some(Self { created_at: at.parse().ok()?, id: id.to_string() })
    }

    fn of(e: &Execution) -> Self {
        Self { created_at: e.created_at, id: e.id.clone() }
    }

    /// Whether `(created_at, id)` comes after this position (newest first).
    fn is_before(&self, created_at: i64, id: &str) -> bool {
        created_at < self.created_at || (created_at == self.created_at && id < self.id.as_str())
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

/// Members of the sorted set `key` scored at most `max` (`+inf` for all), highest score
/// first, skipping `offset` and returning at most `count`, with their scores (whole
/// milliseconds): one page of a newest-first walk of an index.
pub(crate) async fn newest_first(
    conn: &mut crate::timed::TimedConnection,
    key: &str,
    max: &str,
    offset: usize,
    count: usize,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(key)
        .arg(max)
        .arg("-inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(offset)
        .arg(count)
        .query_async(conn)
        .await?;
    #[allow(clippy::cast_possible_truncation)]
    Ok(rows.into_iter().map(|(member, score)| (member, score as i64)).collect())
}

/// A position in every shard's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor(Vec<String>);

impl EventCursor {
    /// The start of every stream.
    pub fn start(shards: u32) -> Self {
        Self(vec!["0-0".to_string(); shards as usize])
    }

    /// Parses a cursor for `shards` shards: stream ids (`<ms>-<seq>`) joined by commas, or
    /// `0` for the start of every stream.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn parse(text: &str, shards: u32) -> Result<Self, String> {
        if text == "0" {
            return Ok(Self::start(shards));
        }
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() != shards as usize {
            return Err(format!(
                "expected {shards} stream id(s) separated by commas (one per shard), got {}",
                parts.len()
            ));
        }
        for p in &parts {
            let valid = p.split_once('-').is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
            if !valid {
                return Err(format!("`{p}` is not a stream id like 1732200000000-0"));
            }
        }
        Ok(Self(parts.into_iter().map(str::to_string).collect()))
    }
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// The cursor just after this event (resume from here).
    pub id: String,
    /// Stable event name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Payload.
    pub data: Value,
    /// When it was appended (ms), from its stream id.
    pub at: i64,
}

fn stream_ms(id: &str) -> i64 {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok()).unwrap_or(0)
}

impl Store {
    /// Lists executions matching `filter`, newest first, `limit` (1 to [`MAX_PAGE`]) at a
    /// time, after `cursor`.
    ///
    /// # Errors
    /// Redis errors; unreadable records.
    pub async fn list_executions(&self, filter: &ExecutionFilter, cursor: Option<&ListCursor>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let shards: Vec<u32> = match &filter.target {
            // A target's executions all live in the target's shard.
            Some(t) => vec![ids::shard_for_key(t, self.shards())],
            None => (0..self.shards()).collect(),
        };
        let mut found = Vec::new();
        let mut more = false;
        for shard in shards {
            let (items, shard_more) = self.list_shard(shard, filter, cursor, limit).await?;
            found.extend(items);
            more |= shard_more;
        }
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        if found.len() > limit {
            found.truncate(limit);
            more = true;
        }
        let next_cursor = if more { found.last().map(|e| ListCursor::of(e).to_string()) } else { None };
        Ok(Page { items: found, next_cursor })
    }

    /// Up to `limit` matches in one shard after `cursor`, and whether more may follow.
    async fn list_shard(
        &self,
        shard: u32,
        filter: &ExecutionFilter,
        cursor: Option<&ListCursor>,
        limit: usize,
    ) -> Result<(Vec<Execution>, bool), StoreError> {
        let index = if let Some(t) = &filter.target {
            self.keys.executions_by_target(shard, t)
        } else if let Some(p) = &filter.pipeline {
            self.keys.executions_by_pipeline(shard, p)
        } else if let Some(s) = filter.status {
            self.keys.executions_by_status(shard, s.as_str())
        } else {
            self.keys.executions_all(shard)
        };
        let batch = (limit * 2).max(50);
        let max = cursor.map_or_else(|| "+inf".to_string(), |c| c.created_at.to_string());
        let mut offset = 0;
        let mut out = Vec::new();
        let mut conn = self.conn.clone();
        loop {
            let rows = newest_first(&mut conn, &index, &max, offset, batch).await?;
            let exhausted = rows.len() < batch;
            offset += rows.len();
            let candidates: Vec<String> = rows
                .into_iter()
                .filter(|(id, score)| cursor.is_none_or(|c| c.is_before(*score, id)))
                .map(|(id, _)| id)
                .collect();
            let mut pipe = redis::pipe();
            for id in &candidates {
                pipe.hgetall(self.keys.execution(shard, id));
            }
            let maps: Vec<HashMap<String, String>> =
                if candidates.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
            for (id, map) in candidates.iter().zip(maps) {
                if map.is_empty() {
                    continue;
                }
                let exec = codec::execution_from_hash(&self.keys.execution(shard, id), &map)?;
                let keep = filter.status.is_none_or(|s| exec.status == s)
                    && filter.pipeline.as_ref().is_none_or(|p| &exec.pipeline_id == p)
                    && filter.target.as_ref().is_none_or(|t| exec.target.as_ref() == Some(t));
                if keep {
                    out.push(exec);
                    if out.len() > limit {
                        return Ok((out, true));
                    }
                }
            }
            if exhausted {
                return Ok((out, false));
            }
        }
    }

    /// Events after `after` (every shard), oldest first within a shard, at most `count` per
    /// shard; returns at once.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn read_events(&self, after: &EventCursor, count: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if self.is_cluster() {
            return read_each_stream(&self.conn, &self.event_keys(), after, count).await;
        }
        let mut conn = self.conn.clone();
        read_streams(&mut conn, &self.event_keys(), after, count, None).await
    }

    /// The cursor at the current end of every shard's stream (`0-0` for an empty one): reading
    /// after it yields only events appended from now on.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError> {
        let keys = self.event_keys();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<StreamRangeReply> = pipe.query_async(&mut conn).await?;
        let ids = replies
            .into_iter()
            .map(|r| r.ids.into_iter().next().map_or_else(|| "0-0".to_string(), |e| e.id))
            .collect();
        Ok(EventCursor(ids))
    }

    /// A reader that may wait for new events on a connection of its own (so a blocked read
    /// never holds up other calls). One per live event subscriber; dropping it closes its
    /// connection, which ends a read in flight.
    ///
    /// On a Redis Cluster the shards' streams live in different slots, which one `XREAD`
    /// cannot cover: the reader reads each stream on the store's connection and, when none
    /// has news, polls again every 100 ms (`CLUSTER_EVENT_POLL`) until the wait is over.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn event_reader(&self) -> Result<EventReader, StoreError> {
        let link = if self.is_cluster() {
            ReaderLink::Polling(self.conn.clone())
        } else {
            // Each read sets its own time limit: the wait it asks for plus the store's.
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            ReaderLink::Blocking(self.nodes[0].get_multiplexed_async_connection_with_config(&config).await?)
        };
        Ok(EventReader { link, keys: self.event_keys(), response_timeout: self.config.response_timeout })
    }

    fn event_keys(&self) -> Vec<String> {
        (0..self.shards()).map(|s| self.keys.events(s)).collect()
    }

    /// The events of execution `id`, oldest first (its newest 1 000); each `id` is the entry
    /// id in the stream of the execution's shard.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn execution_events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let shard = ids::shard_of(id, ids::EXECUTION)?;
        let mut conn = self.conn.clone();
        let raw: Vec<String> =
            redis::cmd("LRANGE").arg(self.keys.execution_events(shard, id)).arg(0).arg(-1).query_async(&mut conn).await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r).ok())
            .map(|v| {
                let stream_id = v["id"].as_str().unwrap_or_default().to_string();
                let data = v["data"].as_str().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
                StoredEvent {
                    at: stream_ms(&stream_id),
                    id: stream_id,
                    kind: v["type"].as_str().unwrap_or_default().to_string(),
                    data,
                }
            })
            .collect())
    }

    /// Every event of `shard`'s stream in `[from, to]` (stream ids or `-`/`+`), for tests and
    /// audits of small streams.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn stream_range(&self, shard: u32, from: &str, to: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::AsyncCommands::xrange(&mut conn, self.keys.events(shard), from, to).await?;
        Ok(reply.ids.iter().map(|e| event_of(e, e.id.clone())).collect())
    }
}

/// How often a live event reader on a Redis Cluster looks for new events while it waits.
pub(crate) const CLUSTER_EVENT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads events for live subscribers; see [`Store::event_reader`].
#[derive(Clone)]
pub struct EventReader {
    link: ReaderLink,
    keys: Vec<String>,
    response_timeout: std::time::Duration,
}

impl fmt::Debug for EventReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader").field("streams", &self.keys).finish_non_exhaustive()
    }
}

impl EventReader {
    /// Events after `after`, at most `count` per shard, waiting up to `block_ms` (at least
    /// 1) when there are none yet (an empty answer then means none arrived).
    ///
    /// # Errors
    /// Redis errors, including no answer within `block_ms` plus the store's response
    /// timeout.
    pub async fn read(&mut self, after: &EventCursor, count: usize, block_ms: u64) -> Result<Vec<StoredEvent>, StoreError> {
        // Redis reads `BLOCK 0` as "forever".
        let block_ms = block_ms.max(1);
        match &mut self.link {
            ReaderLink::Blocking(conn) => {
                conn.set_response_timeout(std::time::Duration::from_millis(block_ms) + self.response_timeout);
                read_streams(conn, &self.keys, after, count, Some(block_ms)).await
            }
            ReaderLink::Polling(conn) => {
                let until = tokio::time::Instant::now() + std::time::Duration::from_millis(block_ms);
                loop {
                    let events = read_each_stream(conn, &self.keys, after, count).await?;
                    let now = tokio::time::Instant::now();
                    if !events.is_empty() || now >= until {
                        return Ok(events);
                    }
                    tokio::time::sleep(CLUSTER_EVENT_POLL.min(until - now)).await;
                }
            }
        }
    }
}

/// The connection of an [`EventReader`].
#[derive(Clone)]
enum ReaderLink {
    /// A connection of its own to the one server, for `XREAD BLOCK` over every stream.
    Blocking(redis::aio::MultiplexedConnection),
    /// The store's connection to a cluster: one `XREAD` per stream (each in its own slot).
    Polling(crate::timed::TimedConnection),
}

/// What [`read_streams`] reads without blocking, with one `XREAD` per stream, concurrently,
/// for a cluster (where the streams live in different slots).
async fn read_each_stream(
    conn: &crate::timed::TimedConnection,
    keys: &[String],
    after: &EventCursor,
    count: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let replies = futures::future::try_join_all(keys.iter().zip(&after.0).map(|(key, from)| {
        let (mut conn, opts) = (conn.clone(), StreamReadOptions::default().count(count.max(1)));
        async move { redis::AsyncCommands::xread_options::<_, _, Option<StreamReadReply>>(&mut conn, &[key], &[from], &opts).await }
    }))
    .await?;
    let mut position = after.clone();
    let mut out = Vec::new();
    for (shard, reply) in replies.into_iter().enumerate() {
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                position.0[shard].clone_from(&entry.id);
                out.push(event_of(&entry, position.to_string()));
            }
        }
    }
    Ok(out)
}

async fn read_streams<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &[String],
    after: &EventCursor,
    count: usize,
    block_ms: Option<u64>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut opts = StreamReadOptions::default().count(count.max(1));
    if let Some(ms) = block_ms {
        opts = opts.block(usize::try_from(ms).unwrap_or(usize::MAX));
    }
    let reply: Option<StreamReadReply> = redis::AsyncCommands::xread_options(conn, keys, &after.0, &opts).await?;
    let mut position = after.clone();
    let mut out = Vec::new();
    for stream in reply.map(|r| r.keys).unwrap_or_default() {
        let Some(shard) = keys.iter().position(|k| *k == stream.key) else { continue };
        for entry in stream.ids {
            position.0[shard].clone_from(&entry.id);
            out.push(event_of(&entry, position.to_string()));
        }
    }
    Ok(out)
}

fn event_of(entry: &redis::streams::StreamId, id: String) -> StoredEvent {
    let kind: String = entry.get("type").unwrap_or_default();
    let data: String = entry.get("data").unwrap_or_default();
    StoredEvent {
        at: stream_ms(&entry.id),
        id,
        kind,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    }
}
