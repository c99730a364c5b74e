//! The engine's schedule operations: create, change, delete, fire when due, run now.
//!
//! Each reads the schedule, decides in `sluice_core::schedule`, and commits with one script
//! guarded by the schedule's revision (and, for a due fire, by its `next_run_at` still
//! being the due time fired: the claim that makes a fire happen once whatever the number of
//! schedulers). A lost race re-reads and decides again.

use std::collections::HashMap;

use sluice_core::execution::{self, Plan, StartRequest};
use sluice_core::schedule::{self, DuePlan, NextRun, ScheduleRun, SchedulePatch, ScheduleSpec, Source, Trigger};
use sluice_core::{Millis, Problem, Schedule, ids};
use sluice_metrics::ScheduleFire;

use crate::engine::Engine;
use crate::{Fire, FireAction, FireOutcome, NameClaim, PutOutcome, StartFire, StoreError, StoredPipeline};

/// Lost races tolerated in a row on one schedule.
const MAX_RACES: usize = 16;

/// What creating a schedule did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Created.
    Created(Box<Schedule>),
    /// Another schedule (this id) has the name.
    NameTaken(String),
    /// Something in the definition does not hold (the pipeline does not exist).
    Invalid(Vec<Problem>),
}

/// What changing a schedule did.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// The schedule as it is now.
    Updated(Box<Schedule>),
    /// No such schedule.
    NotFound,
    /// The change is refused; every problem names its field.
    Invalid(Vec<Problem>),
}

/// What a run-now did.
#[derive(Debug, Clone, PartialEq)]
pub enum RanNow {
    /// The execution started; the schedule as it is now and the history row.
    Fired {
        /// The schedule after the fire.
        schedule: Box<Schedule>,
        /// Its history row.
        run: ScheduleRun,
    },
    /// The target has a live execution and `overlap` is `skip`.
    TargetBusy {
        /// The target.
        target: String,
        /// The live execution holding it.
        holder: String,
    },
    /// The schedule's pipeline does not exist.
    PipelineMissing(String),
    /// No such schedule.
    NotFound,
}

/// What one tick of due fires did in a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Executions started.
    pub fired: usize,
    /// Fires skipped while their target was busy (each looked at again next tick).
    pub skipped: usize,
    /// Late fires dropped by `catch_up = "none"`.
    pub dropped: usize,
    /// Fires whose execution could not start (the pipeline is gone).
    pub failed: usize,
}

/// What a listing of schedules asks for; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleFilter {
    /// Only schedules of this pipeline.
    pub pipeline: Option<String>,
    /// Only schedules on this target.
    pub target: Option<String>,
    /// Only enabled (or disabled) schedules.
    pub enabled: Option<bool>,
}

impl ScheduleFilter {
    fn admits(&self, s: &Schedule) -> bool {
        self.pipeline.as_ref().is_none_or(|p| &s.pipeline == p)
            && self.target.as_ref().is_none_or(|t| &s.target == t)
            && self.enabled.is_none_or(|e| s.enabled == e)
    }
}

/// Most schedules one listing page reads to fill itself (filters may skip many).
const LIST_BUDGET: usize = 2_000;

/// What happened to one due schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    Started,
    Skipped,
    Dropped,
    Failed,
    Nothing,
}

/// Pipelines read during one tick, by id (`None`: it does not exist).
type PipelineCache = HashMap<String, Option<StoredPipeline>>;

impl Engine {
    /// The pipeline `id` (read once per tick through `cache`).
    async fn cached_pipeline(&self, id: &str, cache: &mut PipelineCache) -> Result<Option<StoredPipeline>, StoreError> {
        if let Some(found) = cache.get(id) {
            return Ok(found.clone());
        }
        let found = self.store().get_pipeline(id).await?;
        cache.insert(id.to_string(), found.clone());
        Ok(found)
    }

    fn missing_pipeline(id: &str) -> Problem {
        Problem::new("pipeline", format!("pipeline `{}` does not exist; apply it first", sluice_core::describe::quote(id, 200)))
    }

    /// Creates a schedule from `spec`: due at its first fire time after now when enabled.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn create_schedule(&self, spec: ScheduleSpec, source: Source) -> Result<Created, StoreError> {
        let store = self.store();
        if store.get_pipeline(&spec.pipeline).await?.is_none() {
            return Ok(Created::Invalid(vec![Self::missing_pipeline(&spec.pipeline)]));
        }
        let shard = store.shard_for_schedule(&spec.target);
        let now = self.now();
        let schedule = Schedule::new(spec, ids::new_id(ids::SCHEDULE, shard), source, now);
        let mut replacing = None;
        for race in 0..=MAX_RACES {
            if race == MAX_RACES {
                return Err(StoreError::Contended(schedule.name));
            }
            match store.claim_schedule_name(&schedule.name, &schedule.id, replacing.as_deref(), source).await? {
                NameClaim::Claimed => break,
                // A name whose schedule no longer exists (a create or delete cut short) is free.
                NameClaim::Taken(holder) if replacing.as_deref() != Some(holder.as_str()) && store.get_schedule(&holder).await?.is_none() => {
                    replacing = Some(holder);
                }
                NameClaim::Taken(holder) => return Ok(Created::NameTaken(holder)),
            }
        }
        let written = store.put_schedule(&schedule, 0, NextRun::Set(schedule.next_run_at), now).await;
        match written {
            Ok(PutOutcome::Applied(rev)) => {
                tracing::info!(schedule.id = %schedule.id, schedule.name = %schedule.name, next_run_at = ?schedule.next_run_at, "schedule created");
                Ok(Created::Created(Box::new(Schedule { rev, ..schedule })))
            }
            Ok(other) => {
                store.release_schedule_name(&schedule.name, &schedule.id).await?;
                Err(crate::contract("put_schedule", other))
            }
            Err(e) => {
                let _ = store.release_schedule_name(&schedule.name, &schedule.id).await;
                Err(e)
            }
        }
    }

    /// Reads schedule `key`: an id, or a name.
    ///
    /// # Errors
    /// Redis errors; an unreadable record.
    pub async fn find_schedule(&self, key: &str) -> Result<Option<Schedule>, StoreError> {
        let store = self.store();
        if ids::parse(key, ids::SCHEDULE).is_ok() {
            return store.get_schedule(key).await;
        }
        match store.schedule_id_by_name(key).await? {
            Some(id) => store.get_schedule(&id).await,
            None => Ok(None),
        }
    }

    /// Schedules in name order after the name `after`, at most `limit` matching `filter`,
    /// and the name to continue after (`None` on the last page). A page reads at most a
    /// bounded number of schedules; when the filter skips them all it can come back short,
    /// with a cursor to go on from.
    ///
    /// # Errors
    /// Redis errors; unreadable records.
    pub async fn list_schedules(&self, filter: &ScheduleFilter, after: Option<&str>, limit: usize) -> Result<(Vec<Schedule>, Option<String>), StoreError> {
        let store = self.store();
        let mut items = Vec::new();
        let mut cursor = after.map(str::to_string);
        let mut read = 0;
        while read < LIST_BUDGET {
            let names = store.schedule_names(cursor.as_deref(), (limit + 1).min(LIST_BUDGET - read)).await?;
            if names.is_empty() {
                return Ok((items, None));
            }
            for name in names {
                read += 1;
                if let Some(s) = self.find_schedule(&name).await?.filter(|s| filter.admits(s)) {
                    if items.len() == limit {
                        return Ok((items, cursor));
                    }
                    items.push(s);
                }
                cursor = Some(name);
            }
        }
        Ok((items, cursor))
    }

    /// Changes schedule `id` with `patch` (re-planned on fresh state after a lost race).
    ///
    /// # Errors
    /// Redis errors, an unreadable record, or [`StoreError::Contended`].
    pub async fn update_schedule(&self, id: &str, patch: &SchedulePatch) -> Result<Updated, StoreError> {
        let store = self.store();
        for _ in 0..MAX_RACES {
            let Some(current) = store.get_schedule(id).await? else { return Ok(Updated::NotFound) };
            let now = self.now();
            let (next_schedule, next) = match current.patched(patch, now) {
                Ok(x) => x,
                Err(problems) => return Ok(Updated::Invalid(problems)),
            };
            let mut problems = Vec::new();
            if next_schedule.pipeline != current.pipeline && store.get_pipeline(&next_schedule.pipeline).await?.is_none() {
                problems.push(Self::missing_pipeline(&next_schedule.pipeline));
            }
            if store.shard_for_schedule(&next_schedule.target) != ids::shard_of(&current.id, ids::SCHEDULE)? {
                problems.push(Problem::new(
                    "target",
                    "belongs to another shard than the schedule's current target; delete the schedule and create it again with this target",
                ));
            }
            if !problems.is_empty() {
                return Ok(Updated::Invalid(problems));
            }
            match store.put_schedule(&next_schedule, current.rev, next, now).await? {
                PutOutcome::Applied(rev) => {
                    let mut written = next_schedule;
                    written.rev = rev;
                    if next == NextRun::Keep {
                        // A fire may have moved it since the read; show what is stored.
                        if let Some(fresh) = store.get_schedule(id).await? {
                            written.next_run_at = fresh.next_run_at;
                            written.last_run_at = fresh.last_run_at;
                        }
                    }
                    return Ok(Updated::Updated(Box::new(written)));
                }
                PutOutcome::Gone => return Ok(Updated::NotFound),
                PutOutcome::Conflict(_) => {}
                PutOutcome::Exists => return Err(crate::contract("put_schedule", "exists on update")),
            }
        }
        Err(StoreError::Contended(id.to_string()))
    }

    /// Deletes schedule `id` with its history; returns whether it existed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let store = self.store();
        let Some(schedule) = store.get_schedule(id).await? else { return Ok(false) };
        let existed = store.delete_schedule(id).await?;
        store.release_schedule_name(&schedule.name, id).await?;
        if existed {
            tracing::info!(schedule.id = %id, schedule.name = %schedule.name, "schedule deleted");
        }
        Ok(existed)
    }

    /// Writes the schedules defined in files: each `spec` is created, or replaces the
    /// definition of the schedule of its name (which becomes file-defined); with
    /// `delete_missing`, schedules defined in files before and named by none of `specs` are
    /// deleted. Returns the problems met, with the name of the schedule each is about; a
    /// schedule with problems is left as it was.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn sync_file_schedules(&self, specs: Vec<ScheduleSpec>, delete_missing: bool) -> Result<Vec<(String, Problem)>, StoreError> {
        let store = self.store();
        let mut problems = Vec::new();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        for spec in specs {
            let name = spec.name.clone();
            for p in self.upsert_file_schedule(spec).await? {
                problems.push((name.clone(), p));
            }
        }
        if !delete_missing {
            return Ok(problems);
        }
        for stale in store.file_schedule_names().await? {
            if names.contains(&stale) {
                continue;
            }
            if let Some(schedule) = self.find_schedule(&stale).await?
                && schedule.source == Source::File
            {
                self.delete_schedule(&schedule.id).await?;
            }
        }
        Ok(problems)
    }

    /// Creates or rewrites the schedule `spec` names.
    async fn upsert_file_schedule(&self, spec: ScheduleSpec) -> Result<Vec<Problem>, StoreError> {
        let store = self.store();
        for _ in 0..MAX_RACES {
            let Some(current) = self.find_schedule(&spec.name).await? else {
                return Ok(match self.create_schedule(spec.clone(), Source::File).await? {
                    Created::Created(s) => {
                        tracing::info!(schedule.id = %s.id, schedule.name = %s.name, "schedule loaded from a file");
                        Vec::new()
                    }
                    Created::NameTaken(_) => continue,
                    Created::Invalid(problems) => problems,
                });
            };
            if store.get_pipeline(&spec.pipeline).await?.is_none() {
                return Ok(vec![Self::missing_pipeline(&spec.pipeline)]);
            }
            if store.shard_for_schedule(&spec.target) != ids::shard_of(&current.id, ids::SCHEDULE)? {
                // Its target moves it to another shard: it becomes a new schedule there.
                self.delete_schedule(&current.id).await?;
                continue;
            }
            let now = self.now();
            let Some((next_schedule, next)) = current.respecified(&spec, Source::File, now) else {
                return Ok(Vec::new());
            };
            match store.put_schedule(&next_schedule, current.rev, next, now).await? {
                PutOutcome::Applied(_) => {
                    store.claim_schedule_name(&next_schedule.name, &next_schedule.id, None, Source::File).await?;
                    tracing::info!(schedule.id = %current.id, schedule.name = %current.name, "schedule updated from a file");
                    return Ok(Vec::new());
                }
                PutOutcome::Gone | PutOutcome::Conflict(_) => {}
                PutOutcome::Exists => return Err(crate::contract("put_schedule", "exists on update")),
            }
        }
        Err(StoreError::Contended(spec.name))
    }

    /// The start of an execution for `schedule`, fired for `fire_time`, in its shard.
    fn start_plan(schedule: &Schedule, pipeline: StoredPipeline, fire_time: Millis, now: Millis) -> Result<(Plan, String, String), StoreError> {
        let shard = ids::shard_of(&schedule.id, ids::SCHEDULE)?;
        let execution_id = ids::new_id(ids::EXECUTION, shard);
        let target = schedule::execution_target(schedule, fire_time);
        let request = StartRequest {
            pipeline: pipeline.pipeline,
            pipeline_version: pipeline.version,
            input: schedule.input.clone(),
            target: Some(target.clone()),
            idempotency_key: None,
        };
        let plan = execution::plan_start(request, execution_id.clone(), ids::new_id(ids::JOB, shard), now);
        Ok((plan, execution_id, target))
    }

    /// Fires the schedules of `shard` due at `now`, at most `chunk` of them: each due time
    /// once, whatever the number of schedulers doing the same. Returns what happened, and
    /// how many schedules were looked at (the caller calls again, with the same `now`, while
    /// that is `chunk`: a fire skipped for a busy target is looked at again after `now`, so
    /// not in the same tick).
    ///
    /// # Errors
    /// Redis errors (the tick ends; the rest is fired on the next one).
    pub async fn fire_due(&self, shard: u32, now: Millis, chunk: usize) -> Result<(FireReport, usize), StoreError> {
        let due = self.store().due_schedules(shard, now, chunk).await?;
        let mut report = FireReport::default();
        let mut cache = PipelineCache::new();
        for id in &due {
            match self.fire_one(id, now, &mut cache).await {
                Ok(Fired::Started) => {
                    report.fired += 1;
                    self.metrics().schedule_fired(ScheduleFire::Fired);
                }
                Ok(Fired::Skipped) => {
                    report.skipped += 1;
                    self.metrics().schedule_fired(ScheduleFire::Skipped);
                }
                Ok(Fired::Dropped) => {
                    report.dropped += 1;
                    self.metrics().schedule_fired(ScheduleFire::Dropped);
                }
                Ok(Fired::Failed) => {
                    report.failed += 1;
                    self.metrics().schedule_fired(ScheduleFire::Failed);
                }
                Ok(Fired::Nothing) => {}
                Err(StoreError::Contended(_)) => {}
                Err(StoreError::Corrupt { key, reason }) => {
                    // One unreadable schedule must not stop the others: it leaves the due set.
                    tracing::error!(schedule.id = %id, %key, %reason, "cannot fire an unreadable schedule; it is taken out of the due set");
                    self.store().reindex_due(id, None).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((report, due.len()))
    }

    /// Fires schedule `id` if it is due at `now`.
    async fn fire_one(&self, id: &str, now: Millis, cache: &mut PipelineCache) -> Result<Fired, StoreError> {
        let store = self.store();
        for _ in 0..MAX_RACES {
            let Some(schedule) = store.get_schedule(id).await? else {
                store.reindex_due(id, None).await?;
                return Ok(Fired::Nothing);
            };
            let Some(plan) = schedule::plan_due(&schedule, now) else {
                // Its due entry is older than the record (or the record is disabled): mend it.
                store.reindex_due(id, schedule.next_run_at.filter(|_| schedule.enabled)).await?;
                return Ok(Fired::Nothing);
            };
            let due_at = plan.due_at();
            let (action, next, kind) = match plan {
                DuePlan::Drop { missed, next_run_at, .. } => {
                    let row = ScheduleRun::dropped(due_at, now, missed);
                    let event = schedule::skipped_event(&schedule, &row);
                    (FireAction::Record { row, event }, NextRun::Set(next_run_at), Fired::Dropped)
                }
                DuePlan::Fire { missed, next_run_at, .. } => match self.cached_pipeline(&schedule.pipeline, cache).await? {
                    None => {
                        let why = format!("pipeline `{}` does not exist", schedule.pipeline);
                        let row = ScheduleRun::failed(schedule::new_run_id(), Trigger::Schedule, Some(due_at), now, why);
                        let event = schedule::skipped_event(&schedule, &row);
                        (FireAction::Record { row, event }, NextRun::Set(next_run_at), Fired::Failed)
                    }
                    Some(pipeline) => {
                        let (plan, execution_id, target) = Self::start_plan(&schedule, pipeline, due_at, now)?;
                        let row = ScheduleRun::fired(schedule::new_run_id(), Trigger::Schedule, Some(due_at), now, &execution_id, missed);
                        let event = schedule::fired_event(&schedule, &row);
                        // With `overlap = "allow"` the execution's own target is busy only
                        // if a run-now took it in the same millisecond: skipped likewise.
                        let busy = ScheduleRun::busy(due_at, now);
                        let skip = Some((busy.clone(), schedule::skipped_event(&schedule, &busy)));
                        let action = FireAction::Start(Box::new(StartFire { plan, execution_id, target, row, event, skip }));
                        (action, NextRun::Set(next_run_at), Fired::Started)
                    }
                },
            };
            let fire = Fire { schedule: &schedule, claims: Some(due_at), action, next, recheck_at: now + 1 };
            match store.fire_schedule(&fire, now).await? {
                FireOutcome::Fired | FireOutcome::Recorded => {
                    tracing::info!(schedule.id = %id, schedule.name = %schedule.name, due_at, outcome = ?kind, "schedule fired");
                    return Ok(kind);
                }
                FireOutcome::Skipped(holder) => {
                    tracing::debug!(schedule.id = %id, due_at, %holder, "schedule skipped: its target is busy");
                    return Ok(Fired::Skipped);
                }
                FireOutcome::Claimed | FireOutcome::Gone | FireOutcome::Busy(_) => return Ok(Fired::Nothing),
                FireOutcome::Conflict => {}
            }
        }
        Err(StoreError::Contended(id.to_string()))
    }

    /// Fires schedule `id` now, whatever its cadence (and even while disabled): refused
    /// while its target is busy unless `overlap = "allow"`. Advances the cadence as any
    /// fire does (see `sluice_core::schedule::plan_run_now`).
    ///
    /// # Errors
    /// Redis errors, an unreadable record, or [`StoreError::Contended`].
    pub async fn run_now(&self, id: &str) -> Result<RanNow, StoreError> {
        let store = self.store();
        for _ in 0..MAX_RACES {
            let Some(schedule) = store.get_schedule(id).await? else { return Ok(RanNow::NotFound) };
            let Some(pipeline) = store.get_pipeline(&schedule.pipeline).await? else {
                return Ok(RanNow::PipelineMissing(schedule.pipeline));
            };
            let now = self.now();
            let (plan, execution_id, target) = Self::start_plan(&schedule, pipeline, now, now)?;
            let run = ScheduleRun::fired(schedule::new_run_id(), Trigger::RunNow, None, now, &execution_id, 0);
            let event = schedule::fired_event(&schedule, &run);
            let next = schedule::plan_run_now(&schedule, now);
            let action = FireAction::Start(Box::new(StartFire { plan, execution_id, target: target.clone(), row: run.clone(), event, skip: None }));
            let fire = Fire { schedule: &schedule, claims: None, action, next, recheck_at: now + 1 };
            match store.fire_schedule(&fire, now).await? {
                FireOutcome::Fired => {
                    tracing::info!(schedule.id = %id, schedule.name = %schedule.name, execution.id = ?run.execution_id, "schedule run now");
                    let mut after = schedule;
                    after.last_run_at = Some(now);
                    if let NextRun::Set(at) = next {
                        after.next_run_at = at;
                    }
                    return Ok(RanNow::Fired { schedule: Box::new(after), run });
                }
                FireOutcome::Busy(holder) | FireOutcome::Skipped(holder) => return Ok(RanNow::TargetBusy { target, holder }),
                FireOutcome::Gone => return Ok(RanNow::NotFound),
                FireOutcome::Conflict | FireOutcome::Claimed | FireOutcome::Recorded => {}
            }
        }
        Err(StoreError::Contended(id.to_string()))
    }

    /// A page of schedule `id`'s history, newest first, each fired row showing its
    /// execution's outcome.
    ///
    /// # Errors
    /// Redis errors; unreadable records.
    pub async fn schedule_runs(&self, id: &str, cursor: Option<&crate::RunCursor>, limit: usize) -> Result<crate::RunPage, StoreError> {
        let mut page = self.store().schedule_runs(id, cursor, limit).await?;
        for row in &mut page.items {
            let Some(exec_id) = row.execution_id.clone() else { continue };
            let execution = match self.store().get_execution(&exec_id).await {
                Ok(e) => e,
                Err(StoreError::BadId(_)) => None,
                Err(e) => return Err(e),
            };
            row.reconcile(execution.map(|e| (e.status, e.finished_at)));
        }
        Ok(page)
    }
}
