//! Schedules: their records, names, due index and history, and the fire script.
//!
//! A schedule lives in its target's shard, beside the target's live slot, so one script
//! can claim a fire, check the target and start the execution ([`Store::fire_schedule`]).
//! Names are unique across shards: a name is claimed under the global tag before the
//! schedule is written in its shard and released after it is deleted; a claim left behind
//! by a crash in between names a schedule that does not exist, and the next create of that
//! name takes it over ([`Store::claim_schedule_name`] with `replacing`).

use std::collections::HashMap;
use std::fmt;

use redis::Value as RValue;
use serde_json::{Value, json};
use sluice_core::event::Event;
use sluice_core::execution::Plan;
use sluice_core::schedule::{HISTORY_CAP, NextRun, ScheduleRun, Source};
use sluice_core::{Millis, Schedule, ids};

use crate::plan::{self, KeyList};
use crate::{Store, StoreError, contract};

/// What [`Store::put_schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the definition's revision now.
    Applied(u64),
    /// A create found the id taken.
    Exists,
    /// An update found no schedule.
    Gone,
    /// An update lost a race: the definition moved on (this is its revision).
    Conflict(u64),
}

/// What [`Store::claim_schedule_name`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// The name is this schedule's.
    Claimed,
    /// Another schedule (this id) holds it.
    Taken(String),
}

/// An execution a fire starts.
#[derive(Debug, Clone)]
pub struct StartFire {
    /// The start plan (`sluice_core::execution::plan_start`), in the schedule's shard.
    pub plan: Plan,
    /// The execution's id.
    pub execution_id: String,
    /// The execution's target, whose live slot the fire claims.
    pub target: String,
    /// The history row.
    pub row: ScheduleRun,
    /// The `schedule.fired` event.
    pub event: Event,
    /// What to record when the target is busy (its `blocked_by` is filled in), and its
    /// event; `None`: a busy target refuses the fire.
    pub skip: Option<(ScheduleRun, Event)>,
}

/// What a fire does, as decided by the caller (see `sluice_core::schedule`).
#[derive(Debug, Clone)]
pub enum FireAction {
    /// Start an execution.
    Start(Box<StartFire>),
    /// Start nothing; record `row` and append `event`.
    Record {
        /// The history row.
        row: ScheduleRun,
        /// Its event.
        event: Event,
    },
}

/// One fire, for [`Store::fire_schedule`].
#[derive(Debug, Clone)]
pub struct Fire<'a> {
    /// The schedule as read (its revision guards the fire).
    pub schedule: &'a Schedule,
    /// The due time the fire claims (the stored `next_run_at` must still be it); `None` for
    /// run-now, which claims none.
    pub claims: Option<Millis>,
    /// What it does.
    pub action: FireAction,
    /// What becomes of `next_run_at` when it happens.
    pub next: NextRun,
    /// When to look at the schedule again if it is skipped for a busy target.
    pub recheck_at: Millis,
}

/// What [`Store::fire_schedule`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// The execution started; the row and the next due time are written.
    Fired,
    /// The row (dropped or failed fire) and the next due time are written.
    Recorded,
    /// The target is busy (held by this execution) and the fire was skipped (recorded once
    /// per due time); `next_run_at` is unchanged.
    Skipped(String),
    /// The target is busy (held by this execution); nothing changed.
    Busy(String),
    /// Another scheduler fired this due time, or the schedule moved to another; nothing
    /// changed.
    Claimed,
    /// The definition changed since it was read; plan again.
    Conflict,
    /// The schedule no longer exists.
    Gone,
}

/// A position in a schedule's history: the time and id of the last row returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    at: Millis,
    id: String,
}

impl RunCursor {
    /// Parses `<at>.<row id>`; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        (!id.is_empty()).then(|| Some(Self { at: at.parse().ok()?, id: id.to_string() }))?
    }
}

impl fmt::Display for RunCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.at, self.id)
    }
}

/// A page of a schedule's history.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// Rows, newest first, as recorded (the caller reads their executions' outcomes).
    pub items: Vec<ScheduleRun>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<RunCursor>,
}

fn word(reply: &[RValue], i: usize) -> Option<String> {
    match reply.get(i) {
        Some(RValue::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(RValue::SimpleString(s)) => Some(s.clone()),
        _ => None,
    }
}

fn number(reply: &[RValue], i: usize) -> u64 {
    match reply.get(i) {
        Some(RValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn next_args(next: NextRun) -> (&'static str, String) {
    match next {
        NextRun::Keep => ("keep", String::new()),
        NextRun::Set(Some(at)) => ("set", at.to_string()),
        NextRun::Set(None) => ("clear", String::new()),
    }
}

fn next_json(next: NextRun) -> Value {
    match next {
        NextRun::Keep => json!({ "mode": "keep" }),
        NextRun::Set(Some(at)) => json!({ "mode": "set", "at": at }),
        NextRun::Set(None) => json!({ "mode": "clear" }),
    }
}

fn row_json(row: &ScheduleRun) -> String {
    serde_json::to_string(row).unwrap_or_default()
}

fn event_json(event: &Event) -> Value {
    json!([event.kind, event.data.to_string()])
}

/// The stored definition: the schedule without what fires change (kept beside it).
fn schedule_doc(schedule: &Schedule) -> String {
    let mut doc = schedule.clone();
    doc.next_run_at = None;
    doc.last_run_at = None;
    serde_json::to_string(&doc).unwrap_or_default()
}

impl Store {
    /// The shard of a schedule on `target` (its target's, so a fire checks the target's
    /// live slot in the same script).
    pub fn shard_for_schedule(&self, target: &str) -> u32 {
        ids::shard_for_key(target, self.shards())
    }

    /// The shard of schedule `id`, if the id is one this deployment can address.
    fn schedule_shard(&self, id: &str) -> Result<Option<u32>, StoreError> {
        let shard = ids::shard_of(id, ids::SCHEDULE)?;
        Ok((shard < self.shards()).then_some(shard))
    }

    fn name_keys(&self) -> [String; 3] {
        [self.keys.schedule_names(), self.keys.schedule_index(), self.keys.schedules_from_files()]
    }

    /// Claims `name` for schedule `id`; with `replacing`, also when that schedule holds it
    /// (a claim left by a schedule that no longer exists). `source` records whether the
    /// name comes from a file.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn claim_schedule_name(&self, name: &str, id: &str, replacing: Option<&str>, source: Source) -> Result<NameClaim, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = self
            .scripts
            .schedule_name
            .key(&self.name_keys()[..])
            .arg("claim")
            .arg(name)
            .arg(id)
            .arg(replacing.unwrap_or(""))
            .arg(source.as_str())
            .invoke_async(&mut conn)
            .await?;
        match word(&reply, 0).as_deref() {
            Some("ok") => Ok(NameClaim::Claimed),
            Some("taken") => Ok(NameClaim::Taken(word(&reply, 1).ok_or_else(|| contract("schedule_name", &reply))?)),
            _ => Err(contract("schedule_name", reply)),
        }
    }

    /// Frees `name` if schedule `id` holds it.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn release_schedule_name(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Vec<RValue> =
            self.scripts.schedule_name.key(&self.name_keys()[..]).arg("release").arg(name).arg(id).invoke_async(&mut conn).await?;
        Ok(())
    }

    /// The id of the schedule called `name`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn schedule_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGET").arg(self.keys.schedule_names()).arg(name).query_async(&mut conn).await?)
    }

    /// Schedule names in name order, strictly after `after`, at most `limit`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn schedule_names(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let min = after.map_or_else(|| "-".to_string(), |a| format!("({a}"));
        Ok(redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.schedule_index())
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?)
    }

    /// The names of the schedules defined in files.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn file_schedule_names(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SMEMBERS").arg(self.keys.schedules_from_files()).query_async(&mut conn).await?)
    }

    /// Writes `schedule`: a create when `expected_rev` is 0, else an update over that
    /// revision. `next` says what becomes of `next_run_at` (and the due index).
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn put_schedule(&self, schedule: &Schedule, expected_rev: u64, next: NextRun, now: Millis) -> Result<PutOutcome, StoreError> {
        let shard = ids::shard_of(&schedule.id, ids::SCHEDULE)?;
        let mut keys = KeyList::for_shard(&self.keys, shard);
        keys.add(self.keys.schedule(shard, &schedule.id));
        keys.add(self.keys.schedules_due(shard));
        let (mode, at) = next_args(next);
        let mut inv = self.with_keys(&self.scripts.put_schedule, keys, now);
        inv.arg(&schedule.id).arg(expected_rev).arg(schedule_doc(schedule)).arg(mode).arg(at);
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
        match word(&reply, 0).as_deref() {
            Some("ok") => Ok(PutOutcome::Applied(number(&reply, 1))),
            Some("exists") => Ok(PutOutcome::Exists),
            Some("gone") => Ok(PutOutcome::Gone),
            Some("conflict") => Ok(PutOutcome::Conflict(number(&reply, 1))),
            _ => Err(contract("put_schedule", reply)),
        }
    }

    /// Reads schedule `id`.
    ///
    /// # Errors
    /// Redis errors; a malformed id or record.
    pub async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        let Some(shard) = self.schedule_shard(id)? else { return Ok(None) };
        let key = self.keys.schedule(shard, id);
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let corrupt = |reason: String| StoreError::Corrupt { key: key.clone(), reason };
        let doc = map.get("doc").ok_or_else(|| corrupt("field `doc` is missing".into()))?;
        let mut schedule: Schedule =
            serde_json::from_str(doc).map_err(|e| corrupt(format!("schedule document is unreadable: {e}")))?;
        let num = |field: &str| -> Result<Option<i64>, StoreError> {
            map.get(field)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i64>().map_err(|_| corrupt(format!("field `{field}` is not a number: {v}"))))
                .transpose()
        };
        schedule.rev = num("rev")?.and_then(|r| u64::try_from(r).ok()).unwrap_or(0);
        schedule.next_run_at = num("next_run_at")?;
        schedule.last_run_at = num("last_run_at")?;
        Ok(Some(schedule))
    }

    /// Deletes schedule `id` and its history (its name is released separately). Returns
    /// whether it existed.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let Some(shard) = self.schedule_shard(id)? else { return Ok(false) };
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .delete_schedule
            .key(self.keys.schedule(shard, id))
            .key(self.keys.schedules_due(shard))
            .key(self.keys.schedule_runs(shard, id))
            .key(self.keys.schedule_rows(shard, id))
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Ids of the schedules of `shard` a scheduler should look at by `now` (due, or skipped
    /// earlier for a busy target), oldest first, at most `limit`: one range query on the
    /// shard's due set, whatever the number of schedules that are not due.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn due_schedules(&self, shard: u32, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.schedules_due(shard))
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?)
    }

    /// Puts schedule `id` back in its shard's due set at `at` (`None`: takes it out), to
    /// mend an index entry that does not match the record.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn reindex_due(&self, id: &str, at: Option<Millis>) -> Result<(), StoreError> {
        let Some(shard) = self.schedule_shard(id)? else { return Ok(()) };
        let mut conn = self.conn.clone();
        let key = self.keys.schedules_due(shard);
        match at {
            Some(at) => redis::cmd("ZADD").arg(key).arg(at).arg(id).query_async::<()>(&mut conn).await?,
            None => redis::cmd("ZREM").arg(key).arg(id).query_async::<()>(&mut conn).await?,
        }
        Ok(())
    }

    /// Commits one fire of a schedule (see `lua/fire_schedule.lua`): only while the
    /// schedule's definition is at the revision it was read at and, for a due fire, while
    /// its `next_run_at` is still the due time claimed.
    ///
    /// # Errors
    /// Redis errors; a malformed id.
    pub async fn fire_schedule(&self, fire: &Fire<'_>, now: Millis) -> Result<FireOutcome, StoreError> {
        let schedule = fire.schedule;
        let shard = ids::shard_of(&schedule.id, ids::SCHEDULE)?;
        let record = self.keys.schedule(shard, &schedule.id);
        let mut keys = KeyList::for_shard(&self.keys, shard);
        keys.add(record.clone());
        keys.add(self.keys.schedules_due(shard));
        keys.add(self.keys.schedule_runs(shard, &schedule.id));
        keys.add(self.keys.schedule_rows(shard, &schedule.id));
        let retention = i64::try_from(self.config.schedule_history_retention.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut body = json!({
            "next": next_json(fire.next),
            "recheck_at": fire.recheck_at,
            "retention_ms": retention,
            "history_cap": HISTORY_CAP,
        });
        match &fire.action {
            FireAction::Start(start) => {
                let StartFire { plan, execution_id, target, row, event, skip } = &**start;
                keys.add(self.keys.target(shard, target));
                let tail = plan::tail(&self.keys, &mut keys, shard, plan, None, now);
                body["mode"] = json!("start");
                body["exec_id"] = json!(execution_id);
                body["tail"] = tail;
                body["row_id"] = json!(row.id);
                body["row"] = json!(row_json(row));
                body["event"] = event_json(event);
                if let Some((skip_row, skip_event)) = skip {
                    body["skip"] = json!({ "row_id": skip_row.id, "row": row_json(skip_row), "event": event_json(skip_event) });
                }
            }
            FireAction::Record { row, event } => {
                keys.add(record);
                body["mode"] = json!("record");
                body["row_id"] = json!(row.id);
                body["row"] = json!(row_json(row));
                body["event"] = event_json(event);
            }
        }
        let mut inv = self.with_keys(&self.scripts.fire_schedule, keys, now);
        inv.arg(&schedule.id)
            .arg(schedule.rev)
            .arg(fire.claims.map(|at| at.to_string()).unwrap_or_default())
            .arg(body.to_string());
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = inv.invoke_async(&mut conn).await?;
        let holder = || word(&reply, 1).ok_or_else(|| contract("fire_schedule", &reply));
        match word(&reply, 0).as_deref() {
            Some("fired") => Ok(FireOutcome::Fired),
            Some("recorded") => Ok(FireOutcome::Recorded),
            Some("skipped") => Ok(FireOutcome::Skipped(holder()?)),
            Some("busy") => Ok(FireOutcome::Busy(holder()?)),
            Some("claimed") => Ok(FireOutcome::Claimed),
            Some("conflict") => Ok(FireOutcome::Conflict),
            Some("gone") => Ok(FireOutcome::Gone),
            _ => Err(contract("fire_schedule", reply)),
        }
    }

    /// A page of schedule `id`'s history, newest first, starting after `cursor`.
    ///
    /// # Errors
    /// Redis errors; a malformed id or row.
    pub async fn schedule_runs(&self, id: &str, cursor: Option<&RunCursor>, limit: usize) -> Result<RunPage, StoreError> {
        let Some(shard) = self.schedule_shard(id)? else { return Ok(RunPage { items: Vec::new(), next_cursor: None }) };
        let index = self.keys.schedule_runs(shard, id);
        let rows_key = self.keys.schedule_rows(shard, id);
        let mut conn = self.conn.clone();
        let max = cursor.map_or_else(|| "+inf".to_string(), |c| c.at.to_string());
        // Rows recorded in the cursor's millisecond come in reverse id order; those not after
        // the cursor were returned already. Read in batches until the page is full.
        let mut picked: Vec<(String, Millis)> = Vec::new();
        let mut offset = 0;
        let batch = limit + 1;
        loop {
            let got = crate::query::newest_first(&mut conn, &index, &max, offset, batch).await?;
            let n = got.len();
            for (row_id, at) in got {
                let seen = cursor.is_some_and(|c| at == c.at && row_id.as_str() >= c.id.as_str());
                if !seen {
                    picked.push((row_id, at));
                }
            }
            offset += n;
            if n < batch || picked.len() > limit {
                break;
            }
        }
        let more = picked.len() > limit;
        picked.truncate(limit);
        let mut items = Vec::with_capacity(picked.len());
        if !picked.is_empty() {
            let ids: Vec<&str> = picked.iter().map(|(id, _)| id.as_str()).collect();
            let texts: Vec<Option<String>> = redis::cmd("HMGET").arg(&rows_key).arg(&ids).query_async(&mut conn).await?;
            for text in texts.into_iter().flatten() {
                let row: ScheduleRun = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt { key: rows_key.clone(), reason: format!("a history row is unreadable: {e}") })?;
                items.push(row);
            }
        }
        let next_cursor = more.then(|| picked.last().map(|(id, at)| RunCursor { at: *at, id: id.clone() })).flatten();
        Ok(RunPage { items, next_cursor })
    }
}
