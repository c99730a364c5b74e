//! Schedules: a pipeline fired on a target at the times of a [`Cadence`], and the pure
//! decisions about each fire.
//!
//! A schedule is written from a [`ScheduleSpec`] (checked field by field by [`parse_spec`],
//! which API bodies and `[[schedules]]` tables share) and changed by a [`SchedulePatch`]
//! ([`parse_patch`], [`Schedule::patched`]). The scheduler asks [`plan_due`] what a due
//! schedule does now; the store commits the answer in one script that also claims the
//! fire (see `fire_schedule.lua`).
//!
//! Rules decided here:
//! - **Overlap** ([`Overlap`]): `skip` (default) leaves `next_run_at` as it is while the
//!   target has a live execution, so the fire happens on the first tick after the target
//!   frees; `allow` starts anyway, the execution on its own target
//!   `<target>#<schedule name>@<fire time>` ([`execution_target`]).
//! - **Catch-up** ([`CatchUp`]): a fire is *late* when it happens more than
//!   [`LATE_GRACE_MS`] after its due time or after other due times passed ([`missed`]:
//!   the due times between the one fired and now, which got no execution of their own).
//!   `one` (default) fires once, late, with the count; `none` fires nothing and records a
//!   `skipped` row whose `missed` counts every due time that passed (the one due too), then
//!   moves to the first fire time after now.
//! - **Next fire**: computed from the actual fire time ([`Cadence::next_after_fire`]); on
//!   create, on re-enable and on a cadence change, from now ([`Cadence::next_after`]), so a
//!   stale due time never fires. A disabled schedule has no `next_run_at`.
//! - **Run now** ([`plan_run_now`]) fires at once (refused while the target is busy, unless
//!   `overlap = "allow"`) and advances the cadence like any fire.
//!
//! [`missed`]: ScheduleRun::missed

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::cadence::Cadence;
use crate::describe::json_kind;
use crate::event::{Event, names};
use crate::{ExecutionStatus, Millis, Problem};

/// Bounds of a schedule's `name`, in characters.
pub const NAME_CHARS: RangeInclusive<usize> = 1..=80;
/// Bounds of `pipeline` and `target`, in characters.
pub const KEY_CHARS: RangeInclusive<usize> = 1..=200;
/// How late a fire may be and still count as on time (a scheduler tick or a busy moment).
pub const LATE_GRACE_MS: Millis = 60_000;
/// Most missed due times counted for one fire.
pub const MISSED_CAP: u32 = 100_000;
/// Most rows kept in a schedule's history (older ones go first).
pub const HISTORY_CAP: usize = 1_000;
/// The time zone of a cadence that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Fields of a schedule spec (a create body, a `[[schedules]]` table).
pub const SPEC_FIELDS: &[&str] = &[
    "name", "pipeline", "target", "input", "cron", "every", "timezone", "weekdays", "hours", "enabled", "overlap",
    "catch_up",
];
/// Fields of a patch.
pub const PATCH_FIELDS: &[&str] = &[
    "pipeline", "target", "input", "cron", "every", "timezone", "weekdays", "hours", "enabled", "overlap", "catch_up",
];

/// What a fire does while the target has a live execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the fire as skipped and keep `next_run_at`: it fires once the target frees.
    #[default]
    Skip,
    /// Start anyway; each execution gets its own target, `<target>#<name>@<fire time>`.
    Allow,
}

/// What happens to fires missed while no scheduler ran.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// They collapse into one late fire, which records how many were missed.
    #[default]
    One,
    /// None of them fires; a `skipped` row records how many were missed.
    None,
}

/// Where a schedule was defined.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Through the API (or the CLI).
    #[default]
    Api,
    /// A `[[schedules]]` table of a file under `pipelines.dir`; rewritten from the file when
    /// it is loaded.
    File,
}

impl Source {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::File => "file",
        }
    }
}

/// A schedule.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// `sch_<shard>_<ULID>`; the shard is its target's.
    pub id: String,
    /// Unique among schedules.
    pub name: String,
    /// The pipeline fired (its current version at each fire).
    pub pipeline: String,
    /// The target of its executions: at most one live execution per target.
    pub target: String,
    /// The input of its executions.
    pub input: Value,
    /// When it fires.
    pub cadence: Cadence,
    /// A disabled schedule does not fire (it has no `next_run_at`), though `run-now` works.
    pub enabled: bool,
    /// What a fire does while the target has a live execution.
    pub overlap: Overlap,
    /// What happens to fires missed while no scheduler ran.
    pub catch_up: CatchUp,
    /// The due time of the next fire (ms); absent while disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Millis>,
    /// When it last started an execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Millis>,
    /// When it was created.
    pub created_at: Millis,
    /// When its definition last changed.
    pub updated_at: Millis,
    /// Where it was defined.
    pub source: Source,
    /// Revision of the definition, bumped by every change of it (not by fires); the
    /// compare-and-set token of updates and fires. Kept beside the stored document.
    #[serde(default, skip)]
    pub rev: u64,
}

/// A checked definition of a schedule (the body of a create, a `[[schedules]]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Name.
    pub name: String,
    /// Pipeline id.
    pub pipeline: String,
    /// Target; default `schedule:<name>`.
    pub target: String,
    /// Execution input (an object); default `{}`.
    pub input: Value,
    /// When it fires.
    pub cadence: Cadence,
    /// Default `true`.
    pub enabled: bool,
    /// Default `skip`.
    pub overlap: Overlap,
    /// Default `one`.
    pub catch_up: CatchUp,
}

/// A checked change of a schedule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulePatch {
    /// New pipeline id.
    pub pipeline: Option<String>,
    /// New target.
    pub target: Option<String>,
    /// New input.
    pub input: Option<Value>,
    /// New cron expression (makes the cadence a cron cadence).
    pub cron: Option<String>,
    /// New interval (makes the cadence an interval).
    pub every: Option<String>,
    /// New time zone.
    pub timezone: Option<String>,
    /// New weekdays of an interval (`[]`: every day).
    pub weekdays: Option<Vec<u8>>,
    /// New hours of an interval; `Some(None)` (`"hours": null`) removes the limit.
    pub hours: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New overlap policy.
    pub overlap: Option<Overlap>,
    /// New catch-up policy.
    pub catch_up: Option<CatchUp>,
}

impl SchedulePatch {
    /// Whether the patch touches the cadence.
    pub fn changes_cadence(&self) -> bool {
        self.cron.is_some() || self.every.is_some() || self.timezone.is_some() || self.weekdays.is_some() || self.hours.is_some()
    }
}

/// What a write does to `next_run_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRun {
    /// Leave it (and the due index) as stored: a fire may have moved it since it was read.
    Keep,
    /// Set it (`None`: clear it, the schedule leaves the due index).
    Set(Option<Millis>),
}

// ---------------------------------------------------------------------------------------
// Reading specs and patches.

/// Reads the fields of one JSON object, recording a [`Problem`] per wrong field.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    at: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn new(value: &'a Value, at: &'a str, known: &[&str]) -> Result<Self, Vec<Problem>> {
        let Value::Object(map) = value else {
            let what = if at.is_empty() { "the schedule" } else { "it" };
            return Err(vec![Problem::new(at, format!("{what} must be an object, not {}", json_kind(value)))]);
        };
        let mut reader = Self { map, at, problems: Vec::new() };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let field = reader.path(key);
                reader.problems.push(Problem::new(field, format!("unknown field; expected one of {}", known.join(", "))));
            }
        }
        Ok(reader)
    }

    fn path(&self, key: &str) -> String {
        crate::describe::field_path(self.at, key)
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let field = self.path(key);
        self.problems.push(Problem::new(field, message));
    }

    /// Problems of a cadence constructor, whose fields are relative.
    fn nested(&mut self, problems: Vec<Problem>) {
        for p in problems {
            let field = if p.field.is_empty() { self.at.to_string() } else { self.path(&p.field) };
            self.problems.push(Problem::new(field, p.message));
        }
    }

    fn present(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The value; `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str, chars: RangeInclusive<usize>) -> Option<String> {
        let value = self.get(key)?;
        let Some(text) = value.as_str() else {
            self.problem(key, format!("must be a string, not {}", json_kind(value)));
            return None;
        };
        let count = text.chars().count();
        if count == 0 {
            self.problem(key, "must not be empty");
            return None;
        }
        if count > *chars.end() {
            self.problem(key, format!("must have at most {} characters (it has {count})", chars.end()));
            return None;
        }
        if text.chars().any(char::is_control) {
            self.problem(key, "must not contain control characters");
            return None;
        }
        Some(text.to_string())
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let value = self.get(key)?;
        let b = value.as_bool();
        if b.is_none() {
            self.problem(key, format!("must be true or false, not {}", json_kind(value)));
        }
        b
    }

    fn object(&mut self, key: &str) -> Option<Value> {
        let value = self.get(key)?;
        if value.is_object() {
            return Some(value.clone());
        }
        self.problem(key, format!("must be an object, not {}", json_kind(value)));
        None
    }

    fn weekdays(&mut self, key: &str) -> Option<Vec<u8>> {
        let value = self.get(key)?;
        let Some(items) = value.as_array() else {
            self.problem(key, format!("must be an array of weekday numbers (1 = Monday … 7 = Sunday), not {}", json_kind(value)));
            return None;
        };
        let mut days = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_u64().and_then(|n| u8::try_from(n).ok()).filter(|n| (1..=7).contains(n)) {
                Some(n) => days.push(n),
                None => {
                    let field = format!("{}[{i}]", self.path(key));
                    self.problems.push(Problem::new(field, format!("must be a weekday number from 1 (Monday) to 7 (Sunday), not {item}")));
                    return None;
                }
            }
        }
        Some(days)
    }

    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)]) -> Option<T> {
        let value = self.get(key)?;
        let found = value.as_str().and_then(|s| options.iter().find(|(name, _)| *name == s)).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
            self.problem(key, format!("must be {}, not {value}", names.join(" or ")));
        }
        found
    }

    fn overlap(&mut self) -> Option<Overlap> {
        self.choice("overlap", &[("skip", Overlap::Skip), ("allow", Overlap::Allow)])
    }

    fn catch_up(&mut self) -> Option<CatchUp> {
        self.choice("catch_up", &[("one", CatchUp::One), ("none", CatchUp::None)])
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<Problem>> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(self.problems),
        }
    }
}

/// Whether `name` can be a schedule's name: not shaped like a schedule id (paths take
/// either, so the two must not be confused).
fn name_problem(name: &str) -> Option<&'static str> {
    crate::ids::parse(name, crate::ids::SCHEDULE)
        .is_ok()
        .then_some("must not have the form of a schedule id (`sch_<shard>_<ULID>`)")
}

/// The cadence the fields `cron`, `every`, `timezone`, `weekdays`, `hours` describe.
fn read_cadence(r: &mut Reader<'_>) -> Option<Cadence> {
    let cron = r.string("cron", 1..=200);
    let every = r.string("every", 1..=40);
    let timezone = r.string("timezone", 1..=80);
    let weekdays = r.weekdays("weekdays");
    let hours = r.string("hours", 1..=20);
    let tz = timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
    match (cron, every) {
        (Some(_), Some(_)) => {
            r.problem("every", "give either `cron` or `every`, not both");
            None
        }
        (Some(expr), None) => {
            for key in ["weekdays", "hours"] {
                if r.get(key).is_some() {
                    r.problem(key, "only applies to an interval (`every`); a cron expression has its own days and hours");
                }
            }
            Cadence::cron(&expr, tz).map_err(|p| r.nested(p)).ok()
        }
        (None, Some(every)) => {
            Cadence::every(&every, weekdays.as_deref().unwrap_or(&[]), hours.as_deref(), tz).map_err(|p| r.nested(p)).ok()
        }
        (None, None) => {
            if !r.present("cron") && !r.present("every") {
                r.problem("cron", "is required: give `cron` (a 5-field cron expression such as `0 9 * * 1-5`) or `every` (an interval such as `6h`)");
            }
            None
        }
    }
}

/// Reads and checks a schedule definition found at `at` (`""` for an API body,
/// `schedules[0]` in a file), reporting every problem. `default_pipeline` is the pipeline a
/// `[[schedules]]` table of a pipeline file fires when it names none.
///
/// # Errors
/// Every problem found, each naming its field.
pub fn parse_spec(value: &Value, at: &str, default_pipeline: Option<&str>) -> Result<ScheduleSpec, Vec<Problem>> {
    let mut r = Reader::new(value, at, SPEC_FIELDS)?;
    let name = r.string("name", NAME_CHARS);
    if r.get("name").is_none() {
        r.problem("name", "is required");
    }
    if let Some(why) = name.as_deref().and_then(name_problem) {
        r.problem("name", why);
    }
    let pipeline = r.string("pipeline", KEY_CHARS).or_else(|| default_pipeline.map(str::to_string));
    if pipeline.is_none() && r.get("pipeline").is_none() {
        r.problem("pipeline", "is required: the id of the pipeline to fire");
    }
    let target = r.string("target", KEY_CHARS);
    let input = if r.present("input") { r.object("input") } else { Some(json!({})) };
    let cadence = read_cadence(&mut r);
    let enabled = r.boolean("enabled").unwrap_or(true);
    let overlap = r.overlap().unwrap_or_default();
    let catch_up = r.catch_up().unwrap_or_default();
    let spec = match (name, pipeline, input, cadence) {
        (Some(name), Some(pipeline), Some(input), Some(cadence)) => Some(ScheduleSpec {
            target: target.unwrap_or_else(|| format!("schedule:{name}")),
            name,
            pipeline,
            input,
            cadence,
            enabled,
            overlap,
            catch_up,
        }),
        _ => None,
    };
    r.finish(spec)
}

/// Reads and checks the body of a change to a schedule, reporting every problem.
///
/// # Errors
/// Every problem found, each naming its field.
pub fn parse_patch(value: &Value) -> Result<SchedulePatch, Vec<Problem>> {
    let mut r = Reader::new(value, "", PATCH_FIELDS)?;
    let patch = SchedulePatch {
        pipeline: r.string("pipeline", KEY_CHARS),
        target: r.string("target", KEY_CHARS),
        input: r.object("input"),
        cron: r.string("cron", 1..=200),
        every: r.string("every", 1..=40),
        timezone: r.string("timezone", 1..=80),
        weekdays: r.weekdays("weekdays"),
        hours: if r.present("hours") && r.get("hours").is_none() { Some(None) } else { r.string("hours", 1..=20).map(Some) },
        enabled: r.boolean("enabled"),
        overlap: r.overlap(),
        catch_up: r.catch_up(),
    };
    if patch.cron.is_some() && patch.every.is_some() {
        r.problem("every", "give either `cron` or `every`, not both");
    }
    r.finish(Some(patch))
}

// ---------------------------------------------------------------------------------------
// Creating and changing.

impl Schedule {
    /// A new schedule `id` from `spec`, created at `now`; an enabled one is due at its
    /// first fire time after `now`.
    pub fn new(spec: ScheduleSpec, id: String, source: Source, now: Millis) -> Self {
        let next_run_at = if spec.enabled { spec.cadence.next_after(now) } else { None };
        Self {
            id,
            name: spec.name,
            pipeline: spec.pipeline,
            target: spec.target,
            input: spec.input,
            cadence: spec.cadence,
            enabled: spec.enabled,
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            next_run_at,
            last_run_at: None,
            created_at: now,
            updated_at: now,
            source,
            rev: 0,
        }
    }

    /// This schedule with its definition replaced by `spec` (a file loaded again), and what
    /// that does to `next_run_at`; `None` when nothing changes.
    pub fn respecified(&self, spec: &ScheduleSpec, source: Source, now: Millis) -> Option<(Schedule, NextRun)> {
        let same = self.pipeline == spec.pipeline
            && self.target == spec.target
            && self.input == spec.input
            && self.cadence == spec.cadence
            && self.enabled == spec.enabled
            && self.overlap == spec.overlap
            && self.catch_up == spec.catch_up
            && self.source == source;
        if same {
            return None;
        }
        let next = self.next_for(spec.enabled, self.cadence != spec.cadence, &spec.cadence, now);
        let mut out = self.clone();
        out.pipeline.clone_from(&spec.pipeline);
        out.target.clone_from(&spec.target);
        out.input = spec.input.clone();
        out.cadence = spec.cadence.clone();
        out.enabled = spec.enabled;
        out.overlap = spec.overlap;
        out.catch_up = spec.catch_up;
        out.source = source;
        out.updated_at = now;
        out.apply_next(next);
        Some((out, next))
    }

    /// What becomes of `next_run_at` when the schedule is to be `enabled` with `cadence`:
    /// re-enabled or given a new cadence, it is recomputed from `now` (a stale due time
    /// never fires); disabled, it is cleared; otherwise it stays as stored.
    fn next_for(&self, enabled: bool, cadence_changed: bool, cadence: &Cadence, now: Millis) -> NextRun {
        match (self.enabled, enabled) {
            (_, false) if self.enabled || self.next_run_at.is_some() => NextRun::Set(None),
            (_, false) => NextRun::Keep,
            (false, true) => NextRun::Set(cadence.next_after(now)),
            (true, true) if cadence_changed => NextRun::Set(cadence.next_after(now)),
            (true, true) => NextRun::Keep,
        }
    }

    fn apply_next(&mut self, next: NextRun) {
        if let NextRun::Set(at) = next {
            self.next_run_at = at;
        }
    }

    /// This schedule with `patch` applied at `now`, and what that does to `next_run_at`.
    ///
    /// # Errors
    /// The cadence the patch makes is invalid (every problem, naming its field).
    pub fn patched(&self, patch: &SchedulePatch, now: Millis) -> Result<(Schedule, NextRun), Vec<Problem>> {
        let cadence = if patch.changes_cadence() { self.recadenced(patch)? } else { self.cadence.clone() };
        let enabled = patch.enabled.unwrap_or(self.enabled);
        let next = self.next_for(enabled, cadence != self.cadence, &cadence, now);
        let mut out = self.clone();
        if let Some(p) = &patch.pipeline {
            out.pipeline.clone_from(p);
        }
        if let Some(t) = &patch.target {
            out.target.clone_from(t);
        }
        if let Some(i) = &patch.input {
            out.input = i.clone();
        }
        out.cadence = cadence;
        out.enabled = enabled;
        out.overlap = patch.overlap.unwrap_or(self.overlap);
        out.catch_up = patch.catch_up.unwrap_or(self.catch_up);
        out.updated_at = now;
        out.apply_next(next);
        Ok((out, next))
    }

    /// The cadence after a patch that touches it: the fields given, the rest from the
    /// current cadence (a `cron` or `every` switches the kind; weekdays and hours apply to
    /// intervals only).
    fn recadenced(&self, patch: &SchedulePatch) -> Result<Cadence, Vec<Problem>> {
        let current = &self.cadence;
        let tz = patch.timezone.as_deref().unwrap_or(current.timezone());
        let to_cron = patch.cron.is_some() || (patch.every.is_none() && current.cron_expr().is_some());
        if to_cron {
            let mut problems = Vec::new();
            if patch.weekdays.is_some() {
                problems.push(Problem::new("weekdays", "only applies to an interval (`every`); a cron expression has its own days and hours"));
            }
            if matches!(patch.hours, Some(Some(_))) {
                problems.push(Problem::new("hours", "only applies to an interval (`every`); a cron expression has its own days and hours"));
            }
            let expr = patch.cron.as_deref().or(current.cron_expr()).unwrap_or_default();
            let cadence = Cadence::cron(expr, tz);
            return match (cadence, problems.is_empty()) {
                (Ok(c), true) => Ok(c),
                (Ok(_), false) => Err(problems),
                (Err(mut p), _) => {
                    problems.append(&mut p);
                    Err(problems)
                }
            };
        }
        let interval = current.every_ms().map(|ms| crate::duration::format(std::time::Duration::from_millis(ms)));
        let every = patch.every.clone().or(interval).unwrap_or_default();
        let same_kind = current.every_ms().is_some();
        let weekdays = patch.weekdays.clone().unwrap_or_else(|| if same_kind { current.weekdays().to_vec() } else { Vec::new() });
        let hours = match &patch.hours {
            Some(h) => h.clone(),
            None if same_kind => current.hours().map(str::to_string),
            None => None,
        };
        Cadence::every(&every, &weekdays, hours.as_deref(), tz)
    }
}

// ---------------------------------------------------------------------------------------
// Fires.

/// What a due schedule does now (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuePlan {
    /// Fire: start an execution (unless the target turns out to be busy and `overlap` is
    /// `skip`), record the run, move to `next_run_at`.
    Fire {
        /// The due time it fires for.
        due_at: Millis,
        /// How late, in ms.
        late_ms: Millis,
        /// Due times after `due_at` that passed and are collapsed into this fire.
        missed: u32,
        /// The fire after this one.
        next_run_at: Option<Millis>,
    },
    /// `catch_up = "none"` and the fire is late: record a `skipped` row, fire nothing, move
    /// to the first fire time after now.
    Drop {
        /// The due time dropped.
        due_at: Millis,
        /// Every due time that passed without an execution (`due_at` among them).
        missed: u32,
        /// The next fire.
        next_run_at: Option<Millis>,
    },
}

impl DuePlan {
    /// The due time it is for.
    pub fn due_at(&self) -> Millis {
        match self {
            DuePlan::Fire { due_at, .. } | DuePlan::Drop { due_at, .. } => *due_at,
        }
    }
}

/// What `schedule` does at `now`; `None` when it is not due (or disabled).
pub fn plan_due(schedule: &Schedule, now: Millis) -> Option<DuePlan> {
    let due_at = schedule.next_run_at.filter(|at| *at <= now && schedule.enabled)?;
    let missed = schedule.cadence.count_between(due_at, now, MISSED_CAP);
    let late_ms = now - due_at;
    let late = missed > 0 || late_ms > LATE_GRACE_MS;
    Some(match schedule.catch_up {
        CatchUp::None if late => DuePlan::Drop {
            due_at,
            missed: missed.saturating_add(1),
            next_run_at: schedule.cadence.next_after(now),
        },
        _ => DuePlan::Fire { due_at, late_ms, missed, next_run_at: schedule.cadence.next_after_fire(now) },
    })
}

/// The `next_run_at` after a run-now at `now`: the cadence advances as after any fire (an
/// interval counts from now); a disabled schedule stays without one.
pub fn plan_run_now(schedule: &Schedule, now: Millis) -> NextRun {
    if schedule.enabled { NextRun::Set(schedule.cadence.next_after_fire(now)) } else { NextRun::Keep }
}

/// A new history row id, `schr_<ULID>`.
pub fn new_run_id() -> String {
    format!("schr_{}", ulid::Ulid::generate())
}

/// The target of an execution a fire at `fire_time` starts: the schedule's, or with
/// `overlap = "allow"` its own, `<target>#<schedule name>@<fire time>` (schedules sharing a
/// target do not share these).
pub fn execution_target(schedule: &Schedule, fire_time: Millis) -> String {
    match schedule.overlap {
        Overlap::Skip => schedule.target.clone(),
        Overlap::Allow => format!("{}#{}@{fire_time}", schedule.target, schedule.name),
    }
}

// ---------------------------------------------------------------------------------------
// History.

/// How a run came about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A due time of the cadence.
    Schedule,
    /// `run-now`.
    RunNow,
}

/// Status of a history row.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Its execution is live (`running`, `blocked` or `paused`).
    Running,
    /// Its execution completed.
    Completed,
    /// Its execution failed, or it could not start one (`reason` says why).
    Failed,
    /// Its execution was cancelled.
    Cancelled,
    /// It started nothing: the target was busy, or the fire was missed (`reason`).
    Skipped,
}

/// Why a fire started nothing.
pub mod reasons {
    /// The target had a live execution (`blocked_by`) and `overlap` is `skip`.
    pub const TARGET_BUSY: &str = "target_busy";
    /// The fire was late and `catch_up` is `none`.
    pub const MISSED: &str = "missed";
}

/// One row of a schedule's run history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// Row id, unique within the schedule.
    pub id: String,
    /// A due time or `run-now`.
    pub trigger: Trigger,
    /// Status; a fired row shows its execution's outcome (read from the execution).
    pub status: RunStatus,
    /// The due time it stands for (absent for `run-now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
    /// When it was recorded (the fire time).
    pub at: Millis,
    /// The execution it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// How long after its due time it was recorded (ms).
    #[serde(default)]
    pub late_ms: Millis,
    /// Whether the fire was late: more than a minute after its due time, or after other
    /// due times passed.
    #[serde(default)]
    pub late: bool,
    /// Due times that passed without an execution of their own. On a fired row, those
    /// after `due_at` (collapsed into it, not counting it); on a row skipped as missed, all
    /// of them (counting `due_at`).
    #[serde(default)]
    pub missed: u32,
    /// Why it started nothing: `target_busy`, `missed`, or why the start failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The live execution that held the target when it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// When its execution ended (read from the execution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
}

impl ScheduleRun {
    /// The row of a fire that starts `execution_id`.
    pub fn fired(id: String, trigger: Trigger, due_at: Option<Millis>, now: Millis, execution_id: &str, missed: u32) -> Self {
        let late_ms = due_at.map_or(0, |d| (now - d).max(0));
        Self {
            id,
            trigger,
            status: RunStatus::Running,
            due_at,
            at: now,
            execution_id: Some(execution_id.to_string()),
            late_ms,
            late: missed > 0 || late_ms > LATE_GRACE_MS,
            missed,
            reason: None,
            blocked_by: None,
            finished_at: None,
        }
    }

    /// The row of a due fire skipped while the target is busy (its holder is filled in by
    /// the script that finds it). One per due time: its id is derived from it.
    pub fn busy(due_at: Millis, now: Millis) -> Self {
        Self {
            id: format!("skip_{due_at}"),
            trigger: Trigger::Schedule,
            status: RunStatus::Skipped,
            due_at: Some(due_at),
            at: now,
            execution_id: None,
            late_ms: (now - due_at).max(0),
            late: false,
            missed: 0,
            reason: Some(reasons::TARGET_BUSY.into()),
            blocked_by: None,
            finished_at: None,
        }
    }

    /// The row of a due fire dropped by `catch_up = "none"`.
    pub fn dropped(due_at: Millis, now: Millis, missed: u32) -> Self {
        Self {
            id: format!("missed_{due_at}"),
            reason: Some(reasons::MISSED.into()),
            late: true,
            missed,
            ..Self::busy(due_at, now)
        }
    }

    /// The row of a fire that could not start an execution (`why`).
    pub fn failed(id: String, trigger: Trigger, due_at: Option<Millis>, now: Millis, why: String) -> Self {
        Self {
            id,
            trigger,
            status: RunStatus::Failed,
            due_at,
            at: now,
            execution_id: None,
            late_ms: due_at.map_or(0, |d| (now - d).max(0)),
            late: false,
            missed: 0,
            reason: Some(why),
            blocked_by: None,
            finished_at: None,
        }
    }

    /// Shows the outcome of the row's execution (`None`: the execution is gone, pruned).
    pub fn reconcile(&mut self, execution: Option<(ExecutionStatus, Option<Millis>)>) {
        if self.execution_id.is_none() {
            return;
        }
        if let Some((status, finished_at)) = execution {
            self.status = match status {
                ExecutionStatus::Running | ExecutionStatus::Blocked | ExecutionStatus::Paused => RunStatus::Running,
                ExecutionStatus::Completed => RunStatus::Completed,
                ExecutionStatus::Failed => RunStatus::Failed,
                ExecutionStatus::Cancelled => RunStatus::Cancelled,
            };
            self.finished_at = finished_at.filter(|_| !status.is_live());
        }
    }
}

/// The `schedule.fired` event of `run`.
pub fn fired_event(schedule: &Schedule, run: &ScheduleRun) -> Event {
    Event::new(
        names::SCHEDULE_FIRED,
        json!({
            "schedule_id": schedule.id, "name": schedule.name, "pipeline": schedule.pipeline,
            "trigger": run.trigger, "due_at": run.due_at, "execution_id": run.execution_id,
            "late_ms": run.late_ms, "late": run.late, "missed": run.missed,
        }),
    )
}

/// The `schedule.skipped` event of `run` (a skipped row, or one that failed to start).
pub fn skipped_event(schedule: &Schedule, run: &ScheduleRun) -> Event {
    Event::new(
        names::SCHEDULE_SKIPPED,
        json!({
            "schedule_id": schedule.id, "name": schedule.name, "pipeline": schedule.pipeline,
            "trigger": run.trigger, "due_at": run.due_at, "reason": run.reason,
            "missed": run.missed, "target": schedule.target,
        }),
    )
}

#[cfg(test)]
mod tests;
