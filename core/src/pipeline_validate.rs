//! Validation of pipeline documents: walks a JSON value tree, collects every problem.
//!
//! [`validate`] is the single gate between a document (a TOML file converted to JSON, a JSON
//! file, or the canonical JSON of a stored [`Pipeline`]) and the typed model. It never
//! stops at the first problem: every field is checked and each problem names the path of its
//! field (`steps[1].retry.initial`, `steps[2].run[0]`, `steps[0].env.FOO`,
//! `steps[1].probe.run[0]`, `steps[1].helper.kind`). It never panics, whatever the input.
//!
//! Both the file form and the canonical form are accepted:
//! - `timeout = "30s"` or `timeout_ms = 30000` (not both); likewise `interval`,
//!   `watch_window`, `result_timeout` and `for` with their `…_ms` twins, and in `retry`,
//!   `initial`/`initial_ms` and `max`/`max_ms`;
//! - `until` as an RFC 3339 instant or as milliseconds since the epoch;
//! - options that have no effect where they stand are refused, except for the value the
//!   canonical form always writes, which changes nothing: `requires_approval = false`,
//!   `max_attempts = 1` on a gate without a helper, and on an `approval` step (which runs no
//!   job) the default `queue` and `retry`.
//!
//! The checks run in two passes: the first collects the step names, so that a placeholder
//! `{{ steps.<name>.… }}` can be checked against the steps that run before its own.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::pipeline::{
    DEFAULT_MAX_PROBE_ERRORS, DEFAULT_QUEUE, Exhaustion, GateDef, HELPER_KINDS, HelperDef, KINDS,
    Pipeline, Probe, Problem, QUEUE_NAME_RULE, StepDef, StepKind, is_queue_name,
};
use crate::retry::{Backoff, RetryPolicy};
use crate::{Millis, describe, duration, template};

/// Most steps a pipeline may have.
const MAX_STEPS: usize = 256;
/// Longest pipeline name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest id or step name, in characters (queue names: [`is_queue_name`]).
const MAX_IDENT_CHARS: usize = 64;
/// Bounds of `retry.max_attempts` and of a gate's `max_attempts`.
const ATTEMPTS: RangeInclusive<u64> = 1..=100;
/// Bounds of a gate's `max_polls`.
const POLLS: RangeInclusive<u64> = 1..=100_000;
/// Bounds of a gate's `max_probe_errors`.
const PROBE_ERRORS: RangeInclusive<u64> = 1..=100;
/// Bounds of an approval's `required_approvals`.
const APPROVALS: RangeInclusive<u64> = 1..=100;
/// Shortest `interval` of a gate, in milliseconds.
const MIN_INTERVAL_MS: u64 = 1_000;
/// How much of a user's text a message quotes before cutting it short.
const QUOTE_LIMIT: usize = 60;

/// Top-level keys.
const TOP_KEYS: &[&str] = &["id", "name", "description", "steps"];
/// Keys every step may have, as listed in messages (the canonical `timeout_ms` is accepted
/// too, and `if` is known but refused).
const COMMON_KEYS: &[&str] = &["name", "kind", "queue", "timeout", "retry", "requires_approval"];
/// Keys accepted on every step, whatever its kind.
const COMMON_ACCEPTED: &[&str] =
    &["name", "kind", "queue", "timeout", "timeout_ms", "retry", "requires_approval", "if"];
/// Keys of an `approval` step besides its own, as listed in messages: it runs no job, so the
/// other common keys are refused with a message of their own.
const APPROVAL_COMMON_KEYS: &[&str] = &["name", "kind"];
/// Common keys of a gate's helper, as listed in messages.
const HELPER_COMMON_KEYS: &[&str] = &["kind", "queue", "timeout", "retry"];
const HELPER_COMMON_ACCEPTED: &[&str] = &["kind", "queue", "timeout", "timeout_ms", "retry"];
/// Keys of an HTTP probe (a command probe has the keys of a `command` step).
const HTTP_PROBE_KEYS: &[&str] = &["url", "headers"];
/// Keys of `retry`, as listed in messages.
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "initial", "max", "jitter"];
const RETRY_ACCEPTED: &[&str] =
    &["max_attempts", "backoff", "initial", "initial_ms", "max", "max_ms", "jitter"];
/// Second segments of `{{ execution.… }}`.
const EXECUTION_FIELDS: &[&str] = &["id", "pipeline", "run", "target", "step"];
/// Environment variable prefix reserved for the variables sluice sets itself.
const RESERVED_ENV_PREFIX: &str = "SLUICE_";
/// Roles an approver `role:<role>` may name.
const ROLES: &[&str] = &["admin", "user", "worker"];
/// Prefix of an approver that names a role rather than a token subject.
const ROLE_PREFIX: &str = "role:";

/// Validates a pipeline document (file form or canonical form).
///
/// # Errors
/// Every problem found, each naming its field.
pub(crate) fn validate(value: &Value) -> Result<Pipeline, Vec<Problem>> {
    let mut checker = Checker::default();
    let pipeline = checker.pipeline(value);
    match pipeline {
        Some(pipeline) if checker.problems.is_empty() => Ok(pipeline),
        _ if !checker.problems.is_empty() => Err(checker.problems),
        // Every `None` above comes with a problem; this arm only guards against a slip.
        _ => Err(vec![Problem::new("", "could not be read as a pipeline")]),
    }
}

/// Collects problems while walking the document.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

/// A step kind, as named by `kind`; one for each of [`KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Noop,
    Http,
    External,
    Gate,
    Approval,
    Sleep,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "command" => Kind::Command,
            "noop" => Kind::Noop,
            "http" => Kind::Http,
            "external" => Kind::External,
            "gate" => Kind::Gate,
            "approval" => Kind::Approval,
            "sleep" => Kind::Sleep,
            _ => return None,
        })
    }

    /// The kind's own keys, as listed in messages.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Command => &["run", "env", "cwd"],
            Kind::Noop => &["output"],
            Kind::Http => &["url", "headers", "result_timeout"],
            Kind::External => &["params"],
            Kind::Gate => &[
                "probe",
                "interval",
                "max_polls",
                "on_exhausted",
                "watch_window",
                "helper",
                "max_attempts",
                "max_probe_errors",
            ],
            Kind::Approval => &["required_approvals", "approvers"],
            Kind::Sleep => &["for", "until"],
        }
    }

    /// The canonical `…_ms` twins of the kind's duration keys: accepted, not listed.
    fn canonical_keys(self) -> &'static [&'static str] {
        match self {
            Kind::Http => &["result_timeout_ms"],
            Kind::Gate => &["interval_ms", "watch_window_ms"],
            Kind::Sleep => &["for_ms"],
            Kind::Command | Kind::Noop | Kind::External | Kind::Approval => &[],
        }
    }
}

/// The options of the job a step (or a gate's helper) runs, as far as they could be read.
struct JobOptions {
    queue: Option<String>,
    timeout_ms: Option<Option<u64>>,
    retry: Option<RetryPolicy>,
}

/// Where a string may hold placeholders: step `i` of a pipeline whose steps are `names`.
#[derive(Clone, Copy)]
struct Scope<'s, 'n> {
    i: usize,
    names: &'s StepNames<'n>,
}

/// What a step may refer to: the index of the first step with each name.
type StepNames<'a> = HashMap<&'a str, usize>;

/// The `run`, `env` and `cwd` of a `command` step or a command probe.
type CommandParts = (Vec<String>, BTreeMap<String, String>, Option<String>);

impl Checker {
    fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(field, message));
    }

    // ----- the document ------------------------------------------------------------------

    fn pipeline(&mut self, value: &Value) -> Option<Pipeline> {
        let Some(map) = value.as_object() else {
            self.problem(
                "",
                format!("must be a table with `id` and `steps`, not {}", kind_of(value)),
            );
            return None;
        };
        self.unknown_keys(map, "", TOP_KEYS, TOP_KEYS);

        let id = self.id(map.get("id"));
        let name = match map.get("name") {
            None => id.clone(),
            Some(v) => self.pipeline_name(v),
        };
        let description = match map.get("description") {
            None => Some(None),
            Some(v) => self.string(v, "description").map(|d| Some(d.to_string())),
        };
        let steps = self.steps(map.get("steps"));
        Some(Pipeline { id: id?, name: name?, description: description?, steps: steps? })
    }

    fn id(&mut self, value: Option<&Value>) -> Option<String> {
        let Some(value) = value else {
            self.problem("id", "is required");
            return None;
        };
        let id = self.string(value, "id")?;
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && id.len() <= MAX_IDENT_CHARS {
            Some(id.to_string())
        } else {
            self.problem(
                "id",
                format!(
                    "`{}` is not a valid id; use 1 to 64 lowercase letters, digits, `.`, `_` or \
                     `-`, starting with a letter or digit",
                    quote(id)
                ),
            );
            None
        }
    }

    fn pipeline_name(&mut self, value: &Value) -> Option<String> {
        let name = self.string(value, "name")?;
        let count = name.chars().count();
        if (1..=MAX_NAME_CHARS).contains(&count) {
            Some(name.to_string())
        } else {
            self.problem(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters long, not {count}"),
            );
            None
        }
    }

    fn steps(&mut self, value: Option<&Value>) -> Option<Vec<StepDef>> {
        let Some(value) = value else {
            self.problem("steps", "is required; give at least one step");
            return None;
        };
        let Some(items) = value.as_array() else {
            self.problem("steps", "must be an array of tables (`[[steps]]`)");
            return None;
        };
        if items.is_empty() {
            self.problem("steps", "must not be empty; give at least one step");
            return None;
        }
        if items.len() > MAX_STEPS {
            self.problem(
                "steps",
                format!("has {} steps; at most {MAX_STEPS} are allowed", items.len()),
            );
        }
        let names = step_names(items);
        let last = items.len() - 1;
        let steps: Vec<Option<StepDef>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.step(item, i == last, Scope { i, names: &names }))
            .collect();
        steps.into_iter().collect()
    }

    // ----- one step ----------------------------------------------------------------------

    fn step(&mut self, value: &Value, is_last: bool, scope: Scope<'_, '_>) -> Option<StepDef> {
        let at = format!("steps[{}]", scope.i);
        let Some(map) = value.as_object() else {
            self.problem(&at, format!("must be a table, not {}", kind_of(value)));
            return None;
        };

        let name = self.step_name(map.get("name"), &at, scope);
        let kind = self.kind_name(map.get("kind"), &at, KINDS);
        if map.contains_key("if") {
            self.problem(field(&at, "if"), "conditions (`if`) are not available in this release");
        }
        if kind == Some(Kind::Approval) {
            self.kind_keys(map, &at, Kind::Approval, COMMON_ACCEPTED, APPROVAL_COMMON_KEYS);
            let options_ok = self.no_job_options(map, &at);
            let kind = self.approval(map, &at).filter(|_| options_ok);
            return Some(StepDef {
                name: name?,
                queue: DEFAULT_QUEUE.to_string(),
                timeout_ms: None,
                retry: RetryPolicy::default(),
                requires_approval: false,
                kind: kind?,
            });
        }

        let options = self.job_options(map, &at, Some(DEFAULT_QUEUE));
        let requires_approval = match map.get("requires_approval") {
            None => Some(false),
            Some(v) => self.requires_approval(v, &field(&at, "requires_approval"), is_last),
        };
        let kind = kind.and_then(|kind| {
            self.kind_keys(map, &at, kind, COMMON_ACCEPTED, COMMON_KEYS);
            self.kind_fields(kind, map, &at, scope, options.queue.as_deref())
        });

        Some(StepDef {
            name: name?,
            queue: options.queue?,
            timeout_ms: options.timeout_ms?,
            retry: options.retry?,
            requires_approval: requires_approval?,
            kind: kind?,
        })
    }

    fn step_name(
        &mut self,
        value: Option<&Value>,
        at: &str,
        scope: Scope<'_, '_>,
    ) -> Option<String> {
        let at = field(at, "name");
        let Some(value) = value else {
            self.problem(at, "is required");
            return None;
        };
        let name = self.string(value, &at)?;
        if !is_step_name(name) {
            self.problem(
                at,
                format!(
                    "`{}` is not a valid step name; use 1 to 64 letters, digits, `_` or `-`",
                    quote(name)
                ),
            );
            return None;
        }
        match scope.names.get(name) {
            Some(&first) if first < scope.i => {
                self.problem(at, format!("duplicate step name `{name}` (also steps[{first}])"));
                None
            }
            _ => Some(name.to_string()),
        }
    }

    /// The kind named at `at.kind`, one of `allowed`: [`KINDS`] for a step, [`HELPER_KINDS`]
    /// for a gate's helper. `None` after a problem.
    fn kind_name(&mut self, value: Option<&Value>, at: &str, allowed: &[&str]) -> Option<Kind> {
        let at = field(at, "kind");
        let expected = allowed.join(", ");
        let Some(value) = value else {
            self.problem(at, format!("is required; expected one of {expected}"));
            return None;
        };
        let name = self.string(value, &at)?;
        if allowed.contains(&name) {
            return Kind::from_name(name);
        }
        let message = if KINDS.contains(&name) {
            format!("a gate's helper cannot be of kind `{name}`; expected one of {expected}")
        } else {
            format!("unknown kind `{}`; expected one of {expected}", quote(name))
        };
        self.problem(at, message);
        None
    }

    /// Reports the keys of `map` that neither the context (`common_accepted`) nor `kind`
    /// accepts; the message lists `common_listed` and the kind's keys.
    fn kind_keys(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        kind: Kind,
        common_accepted: &[&str],
        common_listed: &[&str],
    ) {
        self.unknown_keys(
            map,
            at,
            &[common_accepted, kind.keys(), kind.canonical_keys()].concat(),
            &[common_listed, kind.keys()].concat(),
        );
    }

    /// `queue` (default `default_queue`; `None` there means the default could not be read,
    /// which was reported already), `timeout` and `retry` of a job.
    fn job_options(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        default_queue: Option<&str>,
    ) -> JobOptions {
        let queue = match map.get("queue") {
            None => default_queue.map(str::to_string),
            Some(v) => self.queue(v, &field(at, "queue")),
        };
        let timeout_ms = self.duration_at_least(map, at, ("timeout", "timeout_ms"), 1);
        let retry = match map.get("retry") {
            None => Some(RetryPolicy::default()),
            Some(v) => self.retry(v, &field(at, "retry")),
        };
        JobOptions { queue, timeout_ms, retry }
    }

    fn queue(&mut self, value: &Value, at: &str) -> Option<String> {
        let queue = self.string(value, at)?;
        if is_queue_name(queue) {
            Some(queue.to_string())
        } else {
            self.problem(
                at,
                format!("`{}` is not a valid queue name; {QUEUE_NAME_RULE}", quote(queue)),
            );
            None
        }
    }

    fn requires_approval(&mut self, value: &Value, at: &str, is_last: bool) -> Option<bool> {
        let requires = self.boolean(value, at)?;
        if requires && is_last {
            self.problem(at, "must not be set on the last step: there is no later step to approve");
            return None;
        }
        Some(requires)
    }

    /// Refuses the job options on an `approval` step, which runs no job; what the canonical
    /// form writes for them (the default queue and retry policy, `requires_approval = false`)
    /// passes. True when nothing was refused.
    fn no_job_options(&mut self, map: &Map<String, Value>, at: &str) -> bool {
        let canonical = [
            ("queue", Some(Value::from(DEFAULT_QUEUE))),
            ("timeout", None),
            ("timeout_ms", None),
            ("retry", serde_json::to_value(RetryPolicy::default()).ok()),
            ("requires_approval", Some(Value::Bool(false))),
        ];
        let before = self.problems.len();
        for (key, written) in canonical {
            let Some(value) = map.get(key) else { continue };
            if written.as_ref() == Some(value) {
                continue;
            }
            let why = if key == "requires_approval" {
                "the step itself waits for approval"
            } else {
                "it runs no job"
            };
            self.problem(field(at, key), format!("does not apply to an approval step: {why}"));
        }
        self.problems.len() == before
    }

    // ----- retry -------------------------------------------------------------------------

    fn retry(&mut self, value: &Value, at: &str) -> Option<RetryPolicy> {
        let Some(map) = value.as_object() else {
            self.problem(at, format!("must be a table, not {}", kind_of(value)));
            return None;
        };
        self.unknown_keys(map, at, RETRY_ACCEPTED, RETRY_KEYS);
        let defaults = RetryPolicy::default();

        let max_attempts = match map.get("max_attempts") {
            None => Some(defaults.max_attempts),
            Some(v) => self.count(v, &field(at, "max_attempts"), ATTEMPTS),
        };
        let backoff = match map.get("backoff") {
            None => Some(defaults.backoff),
            Some(v) => self.choice(
                v,
                &field(at, "backoff"),
                "backoff",
                &[("fixed", Backoff::Fixed), ("exponential", Backoff::Exponential)],
            ),
        };
        let jitter = match map.get("jitter") {
            None => Some(defaults.jitter),
            Some(v) => self.boolean(v, &field(at, "jitter")),
        };
        let initial = self.duration_pair(map, at, "initial", "initial_ms");
        let max = self.duration_pair(map, at, "max", "max_ms");

        let (initial, max) = (initial?, max?);
        let initial_ms = initial.unwrap_or(defaults.initial_ms);
        let max_ms = max.unwrap_or(defaults.max_ms);
        if max_ms < initial_ms {
            let show = |ms| duration::format(Duration::from_millis(ms));
            if max.is_some() {
                self.problem(
                    field(at, "max"),
                    format!("`{}` is shorter than `initial` ({})", show(max_ms), show(initial_ms)),
                );
            } else {
                self.problem(
                    field(at, "initial"),
                    format!(
                        "`{}` is longer than the default `max` ({}); set `max` as well",
                        show(initial_ms),
                        show(max_ms)
                    ),
                );
            }
            return None;
        }
        Some(RetryPolicy {
            max_attempts: max_attempts?,
            backoff: backoff?,
            initial_ms,
            max_ms,
            jitter: jitter?,
        })
    }

    /// An integer within `range` (which fits `u32`).
    fn count(&mut self, value: &Value, at: &str, range: RangeInclusive<u64>) -> Option<u32> {
        let count =
            value.as_u64().filter(|n| range.contains(n)).and_then(|n| u32::try_from(n).ok());
        if count.is_none() {
            let (low, high) = (range.start(), range.end());
            self.problem(at, format!("must be an integer between {low} and {high}"));
        }
        count
    }

    /// One of the named `options`; `what` names the setting in messages.
    fn choice<T: Copy>(
        &mut self,
        value: &Value,
        at: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let expected = alternatives(options.iter().map(|(name, _)| format!("`{name}`")));
        let Some(text) = value.as_str() else {
            self.problem(at, format!("must be a string: {expected}"));
            return None;
        };
        let found = options.iter().find(|(name, _)| *name == text).map(|&(_, option)| option);
        if found.is_none() {
            self.problem(at, format!("unknown {what} `{}`; expected {expected}", quote(text)));
        }
        found
    }

    // ----- durations and instants --------------------------------------------------------

    /// A duration given either as text under `text_key` or as milliseconds under `ms_key`.
    /// `Some(None)` when neither is present; `None` after a problem.
    fn duration_pair(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        text_key: &str,
        ms_key: &str,
    ) -> Option<Option<u64>> {
        match (map.get(text_key), map.get(ms_key)) {
            (None, None) => Some(None),
            (Some(_), Some(_)) => {
                self.problem(
                    field(at, text_key),
                    format!("give either `{text_key}` or `{ms_key}`, not both"),
                );
                None
            }
            (Some(text), None) => self.duration_text(text, &field(at, text_key)).map(Some),
            (None, Some(ms)) => match ms.as_u64() {
                Some(ms) => Some(Some(ms)),
                None => {
                    self.problem(
                        field(at, ms_key),
                        "must be a non-negative integer (milliseconds)",
                    );
                    None
                }
            },
        }
    }

    /// Like [`Self::duration_pair`], for a duration that must be at least `min_ms` (1: longer
    /// than zero).
    fn duration_at_least(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        (text_key, ms_key): (&str, &str),
        min_ms: u64,
    ) -> Option<Option<u64>> {
        match self.duration_pair(map, at, text_key, ms_key)? {
            Some(ms) if ms < min_ms => {
                let key = given(map, text_key, ms_key);
                let message = if min_ms <= 1 {
                    "must be longer than zero".to_string()
                } else {
                    format!("must be at least {}", duration::format(Duration::from_millis(min_ms)))
                };
                self.problem(field(at, key), message);
                None
            }
            ms => Some(ms),
        }
    }

    fn duration_text(&mut self, value: &Value, at: &str) -> Option<u64> {
        let Some(text) = value.as_str() else {
            self.problem(at, "must be a duration string such as `30s`, `5m` or `1h30m`");
            return None;
        };
        match duration::parse(text) {
            Ok(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(message) => {
                self.problem(at, message);
                None
            }
        }
    }

    /// An instant: RFC 3339 text (file form) or milliseconds since the epoch (canonical).
    fn instant(&mut self, value: &Value, at: &str) -> Option<Millis> {
        let instant = match value {
            Value::String(text) => rfc3339_millis(text),
            Value::Number(n) => {
                n.as_i64().ok_or_else(|| "must be an integer (milliseconds since the epoch)".into())
            }
            other => Err(format!(
                "must be an RFC 3339 instant such as `2026-12-01T10:00:00Z`, not {}",
                kind_of(other)
            )),
        };
        instant.map_err(|message| self.problem(at, message)).ok()
    }

    // ----- kinds -------------------------------------------------------------------------

    /// The fields of `kind` in `map`; `queue` is the step's, the default of a gate's helper.
    fn kind_fields(
        &mut self,
        kind: Kind,
        map: &Map<String, Value>,
        at: &str,
        scope: Scope<'_, '_>,
        queue: Option<&str>,
    ) -> Option<StepKind> {
        match kind {
            Kind::Command => {
                let (run, env, cwd) = self.command(map, at, scope)?;
                Some(StepKind::Command { run, env, cwd })
            }
            Kind::Noop => Some(StepKind::Noop { output: present(map, "output") }),
            Kind::Http => self.http(map, at, scope),
            Kind::External => Some(StepKind::External { params: present(map, "params") }),
            Kind::Gate => self.gate(map, at, scope, queue),
            Kind::Approval => self.approval(map, at),
            Kind::Sleep => self.sleep(map, at),
        }
    }

    fn command(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        scope: Scope<'_, '_>,
    ) -> Option<CommandParts> {
        let run = self.run(map.get("run"), at, scope);
        let env = match map.get("env") {
            None => Some(BTreeMap::new()),
            Some(v) => self.string_table(v, &field(at, "env"), scope, Self::env_key),
        };
        let cwd = match map.get("cwd") {
            None => Some(None),
            Some(v) => self.templated_string(v, &field(at, "cwd"), scope, cwd_problem).map(Some),
        };
        Some((run?, env?, cwd?))
    }

    fn run(
        &mut self,
        value: Option<&Value>,
        at: &str,
        scope: Scope<'_, '_>,
    ) -> Option<Vec<String>> {
        let at = field(at, "run");
        let Some(value) = value else {
            self.problem(
                at,
                "is required for a `command` step; give the program and its arguments",
            );
            return None;
        };
        let Some(items) = value.as_array() else {
            self.problem(at, "must be an array of strings");
            return None;
        };
        if items.is_empty() {
            self.problem(at, "must not be empty; give at least the program");
            return None;
        }
        self.items(items, &at, |checker, k, item, item_at| match item.as_str() {
            Some("") if k == 0 => {
                checker.problem(item_at, "the program must not be empty");
                None
            }
            Some(arg) => checker.templated(arg, item_at, scope).then(|| arg.to_string()),
            None => {
                checker.problem(item_at, format!("must be a string, not {}", kind_of(item)));
                None
            }
        })
    }

    /// A table of strings that may hold placeholders (`env`, `headers`); `key_ok` checks
    /// and reports each key.
    fn string_table(
        &mut self,
        value: &Value,
        at: &str,
        scope: Scope<'_, '_>,
        key_ok: fn(&mut Self, &str, &str) -> bool,
    ) -> Option<BTreeMap<String, String>> {
        let Some(map) = value.as_object() else {
            self.problem(at, "must be a table of strings");
            return None;
        };
        let mut table = Some(BTreeMap::new());
        for (key, value) in map {
            let entry_at = field(at, key);
            let key_ok = key_ok(self, key, &entry_at);
            let value = match value.as_str() {
                Some(text) => self.templated(text, &entry_at, scope).then(|| text.to_string()),
                None => {
                    self.problem(&entry_at, format!("must be a string, not {}", kind_of(value)));
                    None
                }
            };
            table = match (table, key_ok, value) {
                (Some(mut table), true, Some(value)) => {
                    table.insert(key.clone(), value);
                    Some(table)
                }
                _ => None,
            };
        }
        table
    }

    fn env_key(&mut self, key: &str, at: &str) -> bool {
        let mut chars = key.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !(first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            self.problem(
                at,
                format!(
                    "`{}` is not a valid variable name; use letters, digits and `_`, not \
                     starting with a digit",
                    quote(key)
                ),
            );
            return false;
        }
        if key.starts_with(RESERVED_ENV_PREFIX) {
            self.problem(
                at,
                format!("`{key}` is reserved: names starting with `{RESERVED_ENV_PREFIX}` are set by sluice"),
            );
            return false;
        }
        true
    }

    fn header_name(&mut self, name: &str, at: &str) -> bool {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let ok = !name.is_empty() && name.chars().all(token);
        if !ok {
            self.problem(
                at,
                format!(
                    "`{}` is not a valid header name; use letters, digits and the HTTP token \
                     characters such as `-`, `_` and `.`",
                    quote(name)
                ),
            );
        }
        ok
    }

    /// A string that may hold placeholders, after `check` found nothing wrong with it.
    fn templated_string(
        &mut self,
        value: &Value,
        at: &str,
        scope: Scope<'_, '_>,
        check: fn(&str) -> Option<String>,
    ) -> Option<String> {
        let text = self.string(value, at)?;
        if let Some(message) = check(text) {
            self.problem(at, message);
            return None;
        }
        self.templated(text, at, scope).then(|| text.to_string())
    }

    fn http(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        scope: Scope<'_, '_>,
    ) -> Option<StepKind> {
        let target = self.http_target(map, at, scope);
        let result_timeout_ms =
            self.duration_at_least(map, at, ("result_timeout", "result_timeout_ms"), 1);
        let (url, headers) = target?;
        Some(StepKind::Http { url, headers, result_timeout_ms: result_timeout_ms? })
    }

    /// `url` and `headers` of an `http` step or an HTTP probe.
    fn http_target(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        scope: Scope<'_, '_>,
    ) -> Option<(String, BTreeMap<String, String>)> {
        let url_at = field(at, "url");
        let url = match map.get("url") {
            None => {
                self.problem(&url_at, "is required; give an `http://` or `https://` URL");
                None
            }
            Some(v) => self.templated_string(v, &url_at, scope, url_problem),
        };
        let headers = match map.get("headers") {
            None => Some(BTreeMap::new()),
            Some(v) => self.string_table(v, &field(at, "headers"), scope, Self::header_name),
        };
        Some((url?, headers?))
    }

    fn gate(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        scope: Scope<'_, '_>,
        queue: Option<&str>,
    ) -> Option<StepKind> {
        let probe = self.probe(map.get("probe"), &field(at, "probe"), scope);
        let interval =
            self.duration_at_least(map, at, ("interval", "interval_ms"), MIN_INTERVAL_MS);
        let interval_ms = match interval {
            Some(None) => {
                self.problem(
                    field(at, "interval"),
                    "is required; give the time between two probes, such as `30s`",
                );
                None
            }
            interval => interval.flatten(),
        };
        let max_polls = match map.get("max_polls") {
            None => {
                self.problem(
                    field(at, "max_polls"),
                    "is required; give how many probes may answer pending, such as `120`",
                );
                None
            }
            Some(v) => self.count(v, &field(at, "max_polls"), POLLS),
        };
        let on_exhausted = match map.get("on_exhausted") {
            None => Some(Exhaustion::default()),
            Some(v) => self.choice(
                v,
                &field(at, "on_exhausted"),
                "policy",
                &[
                    ("fail", Exhaustion::Fail),
                    ("pass", Exhaustion::Pass),
                    ("rearm", Exhaustion::Rearm),
                ],
            ),
        };
        let watch_window = self.duration_at_least(map, at, ("watch_window", "watch_window_ms"), 1);
        let watch_window_ms = match watch_window {
            Some(Some(_)) if on_exhausted.is_some_and(|policy| policy != Exhaustion::Pass) => {
                let key = given(map, "watch_window", "watch_window_ms");
                self.problem(field(at, key), "only applies with `on_exhausted = \"pass\"`");
                None
            }
            window => window,
        };
        let helper = match map.get("helper") {
            None => Some(None),
            Some(v) => self.helper(v, &field(at, "helper"), scope, queue).map(|h| Some(h.into())),
        };
        let max_attempts = match map.get("max_attempts") {
            None => Some(1),
            Some(v) => self.count(v, &field(at, "max_attempts"), ATTEMPTS).filter(|&n| {
                let without_effect = n != 1 && !map.contains_key("helper");
                if without_effect {
                    self.problem(
                        field(at, "max_attempts"),
                        "has no effect without a `helper`: it bounds the runs of the helper",
                    );
                }
                !without_effect
            }),
        };
        let max_probe_errors = match map.get("max_probe_errors") {
            None => Some(DEFAULT_MAX_PROBE_ERRORS),
            Some(v) => self.count(v, &field(at, "max_probe_errors"), PROBE_ERRORS),
        };
        Some(StepKind::Gate(GateDef {
            probe: probe?,
            interval_ms: interval_ms?,
            max_polls: max_polls?,
            on_exhausted: on_exhausted?,
            watch_window_ms: watch_window_ms?,
            helper: helper?,
            max_attempts: max_attempts?,
            max_probe_errors: max_probe_errors?,
        }))
    }

    /// A gate's probe: a command (`run`, `env`, `cwd`) or an HTTP GET (`url`, `headers`).
    fn probe(&mut self, value: Option<&Value>, at: &str, scope: Scope<'_, '_>) -> Option<Probe> {
        const WHICH: &str = "`run` (a command) or `url` (an HTTP GET)";
        let Some(value) = value else {
            self.problem(at, format!("is required; give {WHICH}"));
            return None;
        };
        let Some(map) = value.as_object() else {
            self.problem(at, format!("must be a table with {WHICH}, not {}", kind_of(value)));
            return None;
        };
        match (map.contains_key("run"), map.contains_key("url")) {
            (true, true) => {
                self.problem(field(at, "url"), format!("give either {WHICH}, not both"));
                None
            }
            (false, false) => {
                self.problem(at, format!("must have {WHICH}"));
                None
            }
            (true, false) => {
                let keys = Kind::Command.keys();
                self.unknown_keys(map, at, keys, keys);
                let (run, env, cwd) = self.command(map, at, scope)?;
                Some(Probe::Command { run, env, cwd })
            }
            (false, true) => {
                self.unknown_keys(map, at, HTTP_PROBE_KEYS, HTTP_PROBE_KEYS);
                let (url, headers) = self.http_target(map, at, scope)?;
                Some(Probe::Http { url, headers })
            }
        }
    }

    /// A gate's helper; its queue defaults to the gate's `queue`.
    fn helper(
        &mut self,
        value: &Value,
        at: &str,
        scope: Scope<'_, '_>,
        queue: Option<&str>,
    ) -> Option<HelperDef> {
        let Some(map) = value.as_object() else {
            self.problem(
                at,
                format!("must be a table with `kind` and its fields, not {}", kind_of(value)),
            );
            return None;
        };
        let kind = self.kind_name(map.get("kind"), at, HELPER_KINDS);
        let options = self.job_options(map, at, queue);
        let kind = kind.and_then(|kind| {
            self.kind_keys(map, at, kind, HELPER_COMMON_ACCEPTED, HELPER_COMMON_KEYS);
            self.kind_fields(kind, map, at, scope, options.queue.as_deref())
        });
        Some(HelperDef {
            queue: options.queue?,
            timeout_ms: options.timeout_ms?,
            retry: options.retry?,
            kind: kind?,
        })
    }

    fn approval(&mut self, map: &Map<String, Value>, at: &str) -> Option<StepKind> {
        let required_at = field(at, "required_approvals");
        let required = match map.get("required_approvals") {
            None => Some(1),
            Some(v) => self.count(v, &required_at, APPROVALS),
        };
        let approvers = match map.get("approvers") {
            None => Some(Vec::new()),
            Some(v) => self.approvers(v, &field(at, "approvers")),
        };
        if let (Some(required), Some(approvers)) = (required, &approvers) {
            let subjects_only = !approvers.iter().any(|a| a.starts_with(ROLE_PREFIX));
            if subjects_only && (1..required as usize).contains(&approvers.len()) {
                self.problem(
                    required_at,
                    format!(
                        "is {required} but only {} approvers are listed: the step could never \
                         be approved",
                        approvers.len()
                    ),
                );
                return None;
            }
        }
        Some(StepKind::Approval { required_approvals: required?, approvers: approvers? })
    }

    fn approvers(&mut self, value: &Value, at: &str) -> Option<Vec<String>> {
        let Some(items) = value.as_array() else {
            self.problem(at, "must be an array of token subjects or `role:<role>` entries");
            return None;
        };
        self.items(items, at, |checker, k, item, item_at| {
            let approver = checker.string(item, item_at)?;
            let message = if approver.trim().is_empty() {
                Some("must not be empty".to_string())
            } else if let Some(role) = approver.strip_prefix(ROLE_PREFIX)
                && !ROLES.contains(&role)
            {
                let roles = alternatives(ROLES.iter().map(|r| format!("`{ROLE_PREFIX}{r}`")));
                Some(format!("`{}` names no role; expected {roles}", quote(approver)))
            } else {
                items[..k].iter().position(|earlier| earlier.as_str() == Some(approver)).map(
                    |first| format!("`{}` is listed twice (also {at}[{first}])", quote(approver)),
                )
            };
            match message {
                Some(message) => {
                    checker.problem(item_at, message);
                    None
                }
                None => Some(approver.to_string()),
            }
        })
    }

    fn sleep(&mut self, map: &Map<String, Value>, at: &str) -> Option<StepKind> {
        let for_ms = self.duration_at_least(map, at, ("for", "for_ms"), 1);
        let until = match map.get("until") {
            None => Some(None),
            Some(v) => self.instant(v, &field(at, "until")).map(Some),
        };
        match (for_ms?, until?) {
            (Some(_), Some(_)) => {
                let key = given(map, "for", "for_ms");
                self.problem(field(at, key), "give either `for` or `until`, not both");
                None
            }
            (None, None) => {
                self.problem(
                    field(at, "for"),
                    "is required: give `for` (a duration such as `10m`) or `until` (an RFC 3339 \
                     instant such as `2026-12-01T10:00:00Z`)",
                );
                None
            }
            (for_ms, until) => Some(StepKind::Sleep { for_ms, until }),
        }
    }

    // ----- placeholders ------------------------------------------------------------------

    /// Checks the placeholders of a string of step `scope.i` (`run`, `env`, `cwd`, `url`,
    /// `headers`, and the same in a gate's probe and helper); true when all are valid.
    fn templated(&mut self, text: &str, at: &str, scope: Scope<'_, '_>) -> bool {
        let found = match template::placeholders(text) {
            Ok(found) => found,
            Err(message) => {
                self.problem(at, message);
                return false;
            }
        };
        let before = self.problems.len();
        for placeholder in &found {
            if let Some(message) = placeholder_problem(placeholder, scope) {
                self.problem(at, message);
            }
        }
        self.problems.len() == before
    }

    // ----- generic helpers ---------------------------------------------------------------

    fn string<'v>(&mut self, value: &'v Value, at: &str) -> Option<&'v str> {
        let text = value.as_str();
        if text.is_none() {
            self.problem(at, format!("must be a string, not {}", kind_of(value)));
        }
        text
    }

    fn boolean(&mut self, value: &Value, at: &str) -> Option<bool> {
        let b = value.as_bool();
        if b.is_none() {
            self.problem(at, format!("must be a boolean (true or false), not {}", kind_of(value)));
        }
        b
    }

    /// Reads every item of the array at `at` with `item` (given its index, value and path);
    /// `None` when any item was refused, after every item was checked.
    fn items<T>(
        &mut self,
        items: &[Value],
        at: &str,
        mut item: impl FnMut(&mut Self, usize, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut read = Some(Vec::with_capacity(items.len()));
        for (k, value) in items.iter().enumerate() {
            let one = item(self, k, value, &format!("{at}[{k}]"));
            read = read.zip(one).map(|(mut read, one)| {
                read.push(one);
                read
            });
        }
        read
    }

    /// Reports every key of `map` not in `accepted`; the message lists `listed`.
    fn unknown_keys(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        accepted: &[&str],
        listed: &[&str],
    ) {
        for key in map.keys() {
            if !accepted.contains(&key.as_str()) {
                self.problem(
                    field(at, key),
                    format!("unknown field; expected one of {}", listed.join(", ")),
                );
            }
        }
    }
}

/// The value under `key`, where `null` is the same as none (as in the typed model).
fn present(map: &Map<String, Value>, key: &str) -> Option<Value> {
    map.get(key).filter(|v| !v.is_null()).cloned()
}

/// `a`, `a or b`, `a, b or c`.
fn alternatives(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Which of the twins `text_key` and `ms_key` a duration was given as (`text_key` when
/// neither).
fn given<'k>(map: &Map<String, Value>, text_key: &'k str, ms_key: &'k str) -> &'k str {
    if map.contains_key(ms_key) && !map.contains_key(text_key) { ms_key } else { text_key }
}

/// The index of the first step with each valid name.
fn step_names(items: &[Value]) -> StepNames<'_> {
    let mut names = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(name) = item.get("name").and_then(Value::as_str).filter(|n| is_step_name(n)) {
            names.entry(name).or_insert(i);
        }
    }
    names
}

fn is_step_name(name: &str) -> bool {
    (1..=MAX_IDENT_CHARS).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// What is wrong with a placeholder in step `scope.i`, if anything.
fn placeholder_problem(p: &template::Placeholder, scope: Scope<'_, '_>) -> Option<String> {
    let segments: Vec<&str> = p.path.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["input", ..] => None,
        ["execution", field] if EXECUTION_FIELDS.contains(field) => None,
        ["execution", ..] => Some(format!(
            "placeholder `{p}` names nothing; `execution` offers {}",
            EXECUTION_FIELDS
                .iter()
                .map(|f| format!("`execution.{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        ["steps", step, rest @ ..] => match scope.names.get(step) {
            None => Some(format!("placeholder `{p}` names no step of this pipeline")),
            Some(&j) if j >= scope.i => Some(format!(
                "placeholder `{p}` names step `{step}`, which does not run before this step"
            )),
            Some(_) => match rest {
                ["output", ..] | ["status"] => None,
                _ => Some(format!(
                    "placeholder `{p}` must continue with `output` or `status` after the step \
                     name (`steps.{step}.output…` or `steps.{step}.status`)"
                )),
            },
        },
        ["steps"] => Some(format!(
            "placeholder `{p}` must name a step: `steps.<name>.output…` or `steps.<name>.status`"
        )),
        _ => Some(format!(
            "placeholder `{p}` starts with `{}`; expected `input`, `execution` or `steps`",
            p.path.first().map_or("", String::as_str)
        )),
    }
}

/// What is wrong with a `cwd`, if anything.
fn cwd_problem(cwd: &str) -> Option<String> {
    cwd.is_empty().then(|| "must not be empty".to_string())
}

/// What is wrong with the `url` of an `http` step or probe, if anything: it must start
/// with `http://` or `https://` and a host (which may be a placeholder), and its text
/// outside placeholders must hold no whitespace.
fn url_problem(url: &str) -> Option<String> {
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    });
    let Some(rest) = after_scheme else {
        return Some(format!("`{}` is not an `http://` or `https://` URL", quote(url)));
    };
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
        return Some(format!("`{}` names no host", quote(url)));
    }
    // Bad placeholders are reported by the placeholder check.
    let found = template::placeholders(url).ok()?;
    let mut literal = String::with_capacity(url.len());
    let mut pos = 0;
    for placeholder in found {
        literal.push_str(&url[pos..placeholder.span.start]);
        pos = placeholder.span.end;
    }
    literal.push_str(&url[pos..]);
    literal
        .contains(|c: char| c.is_whitespace() || c.is_control())
        .then(|| format!("`{}` holds whitespace; encode it as `%20`", quote(url)))
}

/// Milliseconds since the epoch of an RFC 3339 instant such as `2026-12-01T10:00:00Z` or
/// `2026-12-01T12:00:00.250+02:00`.
fn rfc3339_millis(text: &str) -> Result<Millis, String> {
    let not_an_instant = || {
        format!("`{}` is not an RFC 3339 instant such as `2026-12-01T10:00:00Z`", quote(text))
    };
    let parsed: toml::value::Datetime = text.parse().map_err(|_| not_an_instant())?;
    let (Some(date), Some(time)) = (parsed.date, parsed.time) else {
        return Err(not_an_instant());
    };
    let Some(second) = time.second else {
        return Err(not_an_instant());
    };
    let offset_minutes = match parsed.offset {
        Some(toml::value::Offset::Z) => 0,
        Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes),
        None => {
            return Err(format!(
                "`{}` has no UTC offset; end it with `Z` or an offset such as `+02:00`",
                quote(text)
            ));
        }
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let minutes = days * 24 * 60 + i64::from(time.hour) * 60 + i64::from(time.minute)
        - offset_minutes;
    let seconds = minutes * 60 + i64::from(second);
    Ok(seconds * 1_000 + i64::from(time.nanosecond.unwrap_or(0) / 1_000_000))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Years counted from March, so that the leap day ends the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `field` under `parent`: `parent.key`, or `key` at the top level.
fn field(parent: &str, key: &str) -> String {
    describe::field_path(parent, key)
}

/// The type of a value in the words of a pipeline file (an object is a TOML table).
fn kind_of(value: &Value) -> &'static str {
    if value.is_object() { "a table" } else { describe::json_kind(value) }
}

fn quote(text: &str) -> String {
    describe::quote(text, QUOTE_LIMIT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pipeline::{parse_json, parse_toml};

    /// The problems of a document that must be refused.
    fn problems_of(value: &Value) -> Vec<Problem> {
        validate(value).expect_err("the document should be refused")
    }

    /// The problems of a TOML document that must be refused.
    fn toml_problems(text: &str) -> Vec<Problem> {
        parse_toml(text).expect_err("the document should be refused")
    }

    /// The message of the only problem at `field`.
    fn message_at<'p>(problems: &'p [Problem], field: &str) -> &'p str {
        let at: Vec<&Problem> = problems.iter().filter(|p| p.field == field).collect();
        assert_eq!(at.len(), 1, "expected one problem at `{field}` in {problems:#?}");
        &at[0].message
    }

    fn fields(problems: &[Problem]) -> Vec<&str> {
        let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        fields.sort_unstable();
        fields
    }

    /// A minimal valid document with `step` as its only step.
    fn one_step(step: Value) -> Value {
        json!({ "id": "p", "steps": [step] })
    }

    const VALID: &str = r#"
        id = "release.web-app"
        name = "Release the web app"
        description = "Build, test, deploy."

        [[steps]]
        name = "first"
        kind = "command"
        run = ["git", "rev-parse", "HEAD"]

        [[steps]]
        name = "build"
        kind = "command"
        queue = "builders.large"
        timeout = "10m"
        run = ["make", "build", "SHA={{ steps.first.output.sha }}"]
        env = { TARGET = "{{input.x}}", MODE = "release" }
        cwd = "/src/{{ execution.pipeline }}"
        retry = { max_attempts = 5, backoff = "fixed", initial = "2s", max = "1m", jitter = false }

        [[steps]]
        name = "deploy"
        kind = "command"
        run = ["deploy", "{{ steps.first.output.sha }}", "{{ steps.build.status }}", "{{ input.x }}"]
    "#;

    /// One step of each kind (and both forms of a probe and of a sleep), in the file form.
    const EVERY_KIND: &str = r#"
        id = "release"

        [[steps]]
        name = "build"
        kind = "command"
        run = ["make"]

        [[steps]]
        name = "ci"
        kind = "gate"
        queue = "gates"
        probe = { run = ["./scripts/ci-status.sh", "{{ steps.build.output.sha }}"] }
        interval = "30s"
        max_polls = 120
        on_exhausted = "pass"
        watch_window = "30m"
        max_attempts = 3
        max_probe_errors = 5
        [steps.helper]
        kind = "command"
        run = ["./scripts/fix-ci.sh"]
        timeout = "5m"
        retry = { max_attempts = 2 }

        [[steps]]
        name = "approve"
        kind = "approval"
        required_approvals = 2
        approvers = ["role:admin", "release-manager"]

        [[steps]]
        name = "deploy"
        kind = "http"
        url = "https://deployer.internal/deploy/{{ steps.build.output.sha }}"
        headers = { Authorization = "Bearer {{ input.token }}" }
        result_timeout = "1h"
        timeout = "30s"
        requires_approval = true

        [[steps]]
        name = "soak"
        kind = "sleep"
        for = "15m"

        [[steps]]
        name = "healthy"
        kind = "gate"
        interval_ms = 1000
        max_polls = 100000
        on_exhausted = "rearm"
        helper = { kind = "http", queue = "fixers", url = "http://fixer.internal/restart" }
        [steps.probe]
        url = "http://monitor.internal/{{ execution.target }}"
        headers = { Accept = "application/json" }

        [[steps]]
        name = "label"
        kind = "external"
        queue = "labeler"
        params = { anything = "json" }

        [[steps]]
        name = "window"
        kind = "sleep"
        until = 2026-12-01T10:00:00Z

        [[steps]]
        name = "done"
        kind = "noop"

        [[steps]]
        name = "sign-off"
        kind = "approval"
    "#;

    /// `base` with the keys of `changes` set; a `null` change removes the key.
    fn with(base: &Value, changes: Value) -> Value {
        let mut value = base.clone();
        let map = value.as_object_mut().expect("a table");
        for (key, change) in changes.as_object().expect("a table") {
            if change.is_null() {
                map.remove(key);
            } else {
                map.insert(key.clone(), change.clone());
            }
        }
        value
    }

    /// A document with a `noop` step `a`, then `step`.
    fn after_a(step: &Value) -> Value {
        json!({"id": "p", "steps": [{"name": "a", "kind": "noop"}, step]})
    }

    /// `step`, read as the step after a `noop` step `a`.
    fn accepted(step: Value) -> StepDef {
        let mut p = validate(&after_a(&step)).unwrap_or_else(|e| panic!("{step}: {e:#?}"));
        p.steps.remove(1)
    }

    /// Checks that each step, placed after a `noop` step `a`, is refused with exactly the one
    /// problem given beside it.
    fn refused_each(cases: &[(Value, &str, &str)]) {
        for (step, field, message) in cases {
            let problems = problems_of(&after_a(step));
            assert_eq!(problems, [Problem::new(*field, *message)], "{step}");
        }
    }

    #[test]
    fn accepts_a_valid_pipeline_of_three_command_steps() {
        let p = parse_toml(VALID).unwrap();
        assert_eq!(p.id, "release.web-app");
        assert_eq!(p.name, "Release the web app");
        assert_eq!(p.description.as_deref(), Some("Build, test, deploy."));
        assert_eq!(p.steps.len(), 3);

        let first = &p.steps[0];
        assert_eq!(first.name, "first");
        assert_eq!(first.queue, DEFAULT_QUEUE);
        assert_eq!(first.timeout_ms, None);
        assert_eq!(first.retry, RetryPolicy::default());
        assert!(!first.requires_approval);

        let build = &p.steps[1];
        assert_eq!(build.queue, "builders.large");
        assert_eq!(build.timeout_ms, Some(600_000));
        assert_eq!(
            build.retry,
            RetryPolicy {
                max_attempts: 5,
                backoff: Backoff::Fixed,
                initial_ms: 2_000,
                max_ms: 60_000,
                jitter: false,
            }
        );
        let StepKind::Command { run, env, cwd } = &build.kind else { panic!("not a command") };
        assert_eq!(run, &["make", "build", "SHA={{ steps.first.output.sha }}"]);
        assert_eq!(env.get("TARGET").map(String::as_str), Some("{{input.x}}"));
        assert_eq!(env.get("MODE").map(String::as_str), Some("release"));
        assert_eq!(cwd.as_deref(), Some("/src/{{ execution.pipeline }}"));
        assert_eq!(p.step_index("deploy"), Some(2));
    }

    #[test]
    fn name_defaults_to_the_id_and_noop_output_is_kept() {
        let p = parse_toml(
            r#"
            id = "n1"
            [[steps]]
            name = "a"
            kind = "noop"
            output = { sha = "abc", n = [1, 2] }
            [[steps]]
            name = "b"
            kind = "noop"
            "#,
        )
        .unwrap();
        assert_eq!(p.name, "n1");
        assert_eq!(
            p.steps[0].kind,
            StepKind::Noop { output: Some(json!({"sha": "abc", "n": [1, 2]})) }
        );
        assert_eq!(p.steps[1].kind, StepKind::Noop { output: None });
        // `null` is the same as no output.
        let p = validate(&one_step(json!({"name": "a", "kind": "noop", "output": null}))).unwrap();
        assert_eq!(p.steps[0].kind, StepKind::Noop { output: None });
    }

    #[test]
    fn reports_every_problem_of_a_malformed_file_at_once() {
        let problems = toml_problems(
            r#"
            id = "broken"
            [[steps]]
            name = "build"
            kind = "command"
            run = ["make", "{{ steps.deploy.output.url }}"]
            [[steps]]
            name = "build"
            kind = "command"
            run = ["make"]
            timeout = "10x"
            [[steps]]
            name = "deploy"
            kind = "foo"
            [[steps]]
            name = "notify"
            kind = "command"
            run = ["notify"]
            colour = "blue"
            "#,
        );
        assert_eq!(
            fields(&problems),
            [
                "steps[0].run[1]",
                "steps[1].name",
                "steps[1].timeout",
                "steps[2].kind",
                "steps[3].colour",
            ]
        );
        assert_eq!(
            message_at(&problems, "steps[0].run[1]"),
            "placeholder `{{ steps.deploy.output.url }}` names step `deploy`, which does not run \
             before this step"
        );
        assert_eq!(
            message_at(&problems, "steps[1].name"),
            "duplicate step name `build` (also steps[0])"
        );
        assert_eq!(message_at(&problems, "steps[1].timeout"), duration::parse("10x").unwrap_err());
        assert_eq!(
            message_at(&problems, "steps[2].kind"),
            "unknown kind `foo`; expected one of command, noop, http, external, gate, approval, \
             sleep"
        );
        assert_eq!(
            message_at(&problems, "steps[3].colour"),
            "unknown field; expected one of name, kind, queue, timeout, retry, requires_approval, \
             run, env, cwd"
        );
    }

    #[test]
    fn refuses_missing_empty_and_oversized_steps() {
        let problems = problems_of(&json!({ "id": "p" }));
        assert_eq!(message_at(&problems, "steps"), "is required; give at least one step");
        let problems = toml_problems("id = \"p\"\nsteps = []");
        assert_eq!(message_at(&problems, "steps"), "must not be empty; give at least one step");
        let problems = toml_problems("id = \"p\"\n[steps]\nname = \"a\"");
        assert_eq!(message_at(&problems, "steps"), "must be an array of tables (`[[steps]]`)");

        let steps: Vec<Value> =
            (0..=MAX_STEPS).map(|i| json!({"name": format!("s{i}"), "kind": "noop"})).collect();
        let problems = problems_of(&json!({ "id": "p", "steps": steps }));
        assert_eq!(fields(&problems), ["steps"]);
        assert!(problems[0].message.contains("at most 256"), "{problems:?}");
        let ok: Vec<Value> = steps[..MAX_STEPS].to_vec();
        assert_eq!(validate(&json!({ "id": "p", "steps": ok })).unwrap().steps.len(), MAX_STEPS);
    }

    #[test]
    fn refuses_steps_that_are_not_tables() {
        let problems = problems_of(&json!({
            "id": "p",
            "steps": [1, "build", [], null, {"name": "ok", "kind": "noop"}],
        }));
        assert_eq!(fields(&problems), ["steps[0]", "steps[1]", "steps[2]", "steps[3]"]);
        assert_eq!(message_at(&problems, "steps[1]"), "must be a table, not a string");
    }

    #[test]
    fn refuses_a_document_that_is_not_a_table() {
        for value in [json!(null), json!([]), json!("id"), json!(3)] {
            let problems = problems_of(&value);
            assert_eq!(fields(&problems), [""], "{value}");
        }
    }

    #[test]
    fn reports_wrong_types_everywhere() {
        let problems = problems_of(&json!({
            "id": 7,
            "name": ["x"],
            "description": false,
            "steps": [
                {
                    "name": 1, "kind": "command", "queue": 2, "timeout": 30,
                    "requires_approval": "no", "run": "make build",
                    "env": ["A=1"], "cwd": {},
                    "retry": { "max_attempts": "3", "backoff": 2, "initial": 1000,
                               "max": true, "jitter": "yes" },
                },
                { "name": "b", "kind": 3, "retry": [] },
                { "name": "c", "kind": "command", "run": ["ok", 2, null], "env": { "A": 1 },
                  "timeout_ms": -5 },
                { "name": "d", "kind": "command", "run": ["x"],
                  "retry": { "max_attempts": 3.0, "initial_ms": "1s", "max_ms": 1.5 } },
            ],
        }));
        let expect = [
            ("id", "must be a string, not a number"),
            ("name", "must be a string, not an array"),
            ("description", "must be a string, not a boolean"),
            ("steps[0].name", "must be a string, not a number"),
            ("steps[0].queue", "must be a string, not a number"),
            ("steps[0].timeout", "must be a duration string such as `30s`, `5m` or `1h30m`"),
            ("steps[0].requires_approval", "must be a boolean (true or false), not a string"),
            ("steps[0].run", "must be an array of strings"),
            ("steps[0].env", "must be a table of strings"),
            ("steps[0].cwd", "must be a string, not a table"),
            ("steps[0].retry.max_attempts", "must be an integer between 1 and 100"),
            ("steps[0].retry.backoff", "must be a string: `fixed` or `exponential`"),
            ("steps[0].retry.initial", "must be a duration string such as `30s`, `5m` or `1h30m`"),
            ("steps[0].retry.max", "must be a duration string such as `30s`, `5m` or `1h30m`"),
            ("steps[0].retry.jitter", "must be a boolean (true or false), not a string"),
            ("steps[1].kind", "must be a string, not a number"),
            ("steps[1].retry", "must be a table, not an array"),
            ("steps[2].run[1]", "must be a string, not a number"),
            ("steps[2].run[2]", "must be a string, not null"),
            ("steps[2].env.A", "must be a string, not a number"),
            ("steps[2].timeout_ms", "must be a non-negative integer (milliseconds)"),
            ("steps[3].retry.max_attempts", "must be an integer between 1 and 100"),
            ("steps[3].retry.initial_ms", "must be a non-negative integer (milliseconds)"),
            ("steps[3].retry.max_ms", "must be a non-negative integer (milliseconds)"),
        ];
        for (field, message) in expect {
            assert_eq!(message_at(&problems, field), message, "at {field}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn checks_identifiers() {
        for bad in ["", "Upper", "-lead", ".lead", "has space", "é", &"a".repeat(65)] {
            let problems =
                problems_of(&json!({ "id": bad, "steps": [{"name": "a", "kind": "noop"}] }));
            assert!(message_at(&problems, "id").contains("is not a valid id"), "{bad}");
        }
        for good in ["a", "0", "a.b_c-d", &"a".repeat(64)] {
            validate(&json!({ "id": good, "steps": [{"name": "a", "kind": "noop"}] })).unwrap();
        }
        for bad in ["", "a.b", "a b", "ビルド", &"a".repeat(65)] {
            let problems = problems_of(&one_step(json!({"name": bad, "kind": "noop"})));
            assert!(message_at(&problems, "steps[0].name").contains("not a valid step name"));
        }
        for bad in ["", "a b", "a/b", &"q".repeat(65)] {
            let problems =
                problems_of(&one_step(json!({"name": "a", "kind": "noop", "queue": bad})));
            assert!(message_at(&problems, "steps[0].queue").contains("not a valid queue name"));
        }
        let problems =
            problems_of(&json!({"id": "p", "name": "", "steps": [{"name": "a", "kind": "noop"}]}));
        assert_eq!(message_at(&problems, "name"), "must be 1 to 200 characters long, not 0");
        let long = "é".repeat(200);
        assert_eq!(
            validate(&json!({"id": "p", "name": long, "steps": [{"name": "a", "kind": "noop"}]}))
                .unwrap()
                .name,
            long
        );
        let problems = problems_of(&one_step(json!({"kind": "noop"})));
        assert_eq!(message_at(&problems, "steps[0].name"), "is required");
        let problems = problems_of(&json!({ "steps": [{"name": "a", "kind": "noop"}] }));
        assert_eq!(message_at(&problems, "id"), "is required");
    }

    #[test]
    fn refuses_unknown_top_level_fields_including_schedules() {
        let problems = problems_of(&json!({
            "id": "p", "colour": "red", "schedules": [],
            "steps": [{"name": "a", "kind": "noop"}],
        }));
        assert_eq!(fields(&problems), ["colour", "schedules"]);
        assert_eq!(
            message_at(&problems, "colour"),
            "unknown field; expected one of id, name, description, steps"
        );
    }

    #[test]
    fn kinds_unknown_missing_and_keys_of_another_kind() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "gat", "probe": {"run": ["x"]}},
            {"name": "b", "kind": "foo", "bar": 1},
            {"name": "c"},
            {"name": "d", "kind": "noop", "run": ["x"]},
            {"name": "e", "kind": "command", "run": ["x"], "output": 1},
            {"name": "f", "kind": "sleep", "for": "1m", "url": "http://x"},
        ]}));
        assert_eq!(
            fields(&problems),
            [
                "steps[0].kind",
                "steps[1].kind",
                "steps[2].kind",
                "steps[3].run",
                "steps[4].output",
                "steps[5].url"
            ]
        );
        assert_eq!(
            message_at(&problems, "steps[0].kind"),
            "unknown kind `gat`; expected one of command, noop, http, external, gate, approval, \
             sleep"
        );
        assert_eq!(
            message_at(&problems, "steps[2].kind"),
            "is required; expected one of command, noop, http, external, gate, approval, sleep"
        );
        assert_eq!(
            message_at(&problems, "steps[3].run"),
            "unknown field; expected one of name, kind, queue, timeout, retry, requires_approval, \
             output"
        );
        assert_eq!(
            message_at(&problems, "steps[5].url"),
            "unknown field; expected one of name, kind, queue, timeout, retry, requires_approval, \
             for, until"
        );
    }

    #[test]
    fn every_kind_of_the_model_is_read() {
        for &name in KINDS {
            assert!(Kind::from_name(name).is_some(), "{name}");
        }
        for &name in HELPER_KINDS {
            assert!(KINDS.contains(&name), "{name}");
        }
        assert_eq!(Kind::from_name("Command"), None);
        let p = parse_toml(EVERY_KIND).unwrap();
        let mut names: Vec<&str> = p.steps.iter().map(|s| s.kind.name()).collect();
        names.sort_unstable();
        names.dedup();
        let mut kinds = KINDS.to_vec();
        kinds.sort_unstable();
        assert_eq!(names, kinds, "EVERY_KIND has a step of each kind");
    }

    #[test]
    fn command_fields() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "command"},
            {"name": "b", "kind": "command", "run": []},
            {"name": "c", "kind": "command", "run": [""]},
            {"name": "d", "kind": "command", "run": ["x"], "cwd": "",
             "env": {"1X": "a", "SLUICE_TOKEN": "b", "A-B": "c", "": "d", "_OK9": "e"}},
        ]}));
        assert_eq!(
            fields(&problems),
            [
                "steps[0].run",
                "steps[1].run",
                "steps[2].run[0]",
                "steps[3].cwd",
                "steps[3].env.1X",
                "steps[3].env.A-B",
                "steps[3].env.SLUICE_TOKEN",
                // An empty key is named as such, not as the table.
                r#"steps[3].env[""]"#,
            ]
        );
        assert!(message_at(&problems, "steps[3].env.SLUICE_TOKEN").contains("reserved"));
        assert!(message_at(&problems, "steps[3].env.1X").contains("not a valid variable name"));
    }

    #[test]
    fn durations_and_retry() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "noop", "timeout": "0s"},
            {"name": "b", "kind": "noop", "timeout_ms": 0},
            {"name": "c", "kind": "noop", "timeout": "1s", "timeout_ms": 1000},
            {"name": "d", "kind": "noop", "retry": {"initial": "10s", "max": "5s"}},
            {"name": "e", "kind": "noop", "retry": {"initial": "2m"}},
            {"name": "f", "kind": "noop", "retry": {"initial": "1s", "initial_ms": 1000,
                                                    "backoff": "linear", "max_attempts": 101,
                                                    "tries": 3}},
            {"name": "g", "kind": "noop", "retry": {"max_attempts": 0}},
            {"name": "h", "kind": "noop", "timeout": ""},
        ]}));
        let expect = [
            ("steps[0].timeout", "must be longer than zero"),
            ("steps[1].timeout_ms", "must be longer than zero"),
            ("steps[2].timeout", "give either `timeout` or `timeout_ms`, not both"),
            ("steps[3].retry.max", "`5s` is shorter than `initial` (10s)"),
            (
                "steps[4].retry.initial",
                "`2m` is longer than the default `max` (1m); set `max` as well",
            ),
            ("steps[5].retry.initial", "give either `initial` or `initial_ms`, not both"),
            (
                "steps[5].retry.backoff",
                "unknown backoff `linear`; expected `fixed` or `exponential`",
            ),
            ("steps[5].retry.max_attempts", "must be an integer between 1 and 100"),
            (
                "steps[5].retry.tries",
                "unknown field; expected one of max_attempts, backoff, initial, max, jitter",
            ),
            ("steps[6].retry.max_attempts", "must be an integer between 1 and 100"),
            ("steps[7].timeout", "is empty; expected a duration such as `30s`, `5m` or `1h30m`"),
        ];
        for (field, message) in expect {
            assert_eq!(message_at(&problems, field), message, "at {field}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");

        let p = validate(&one_step(json!({"name": "a", "kind": "noop", "timeout": "1h30m",
            "retry": {"max_attempts": 100, "initial": "0s", "max": "0s"}})))
        .unwrap();
        assert_eq!(p.steps[0].timeout_ms, Some(5_400_000));
        assert_eq!((p.steps[0].retry.initial_ms, p.steps[0].retry.max_ms), (0, 0));
        assert_eq!(p.steps[0].retry.max_attempts, 100);
    }

    #[test]
    fn accepts_every_kind() {
        let p = parse_toml(EVERY_KIND).unwrap();
        let kind = |name: &str| &p.steps[p.step_index(name).unwrap()].kind;
        let command = |run: &str| StepKind::Command {
            run: vec![run.to_string()],
            env: BTreeMap::new(),
            cwd: None,
        };

        let ci = StepKind::Gate(GateDef {
            probe: Probe::Command {
                run: vec!["./scripts/ci-status.sh".into(), "{{ steps.build.output.sha }}".into()],
                env: BTreeMap::new(),
                cwd: None,
            },
            interval_ms: 30_000,
            max_polls: 120,
            on_exhausted: Exhaustion::Pass,
            watch_window_ms: Some(1_800_000),
            helper: Some(Box::new(HelperDef {
                queue: "gates".into(),
                timeout_ms: Some(300_000),
                retry: RetryPolicy { max_attempts: 2, ..RetryPolicy::default() },
                kind: command("./scripts/fix-ci.sh"),
            })),
            max_attempts: 3,
            max_probe_errors: 5,
        });
        assert_eq!(kind("ci"), &ci);

        let healthy = StepKind::Gate(GateDef {
            probe: Probe::Http {
                url: "http://monitor.internal/{{ execution.target }}".into(),
                headers: BTreeMap::from([("Accept".into(), "application/json".into())]),
            },
            interval_ms: 1_000,
            max_polls: 100_000,
            on_exhausted: Exhaustion::Rearm,
            watch_window_ms: None,
            helper: Some(Box::new(HelperDef {
                queue: "fixers".into(),
                timeout_ms: None,
                retry: RetryPolicy::default(),
                kind: StepKind::Http {
                    url: "http://fixer.internal/restart".into(),
                    headers: BTreeMap::new(),
                    result_timeout_ms: None,
                },
            })),
            max_attempts: 1,
            max_probe_errors: DEFAULT_MAX_PROBE_ERRORS,
        });
        assert_eq!(kind("healthy"), &healthy);

        assert_eq!(
            kind("approve"),
            &StepKind::Approval {
                required_approvals: 2,
                approvers: vec!["role:admin".into(), "release-manager".into()],
            }
        );
        assert_eq!(
            kind("sign-off"),
            &StepKind::Approval { required_approvals: 1, approvers: Vec::new() }
        );
        let deploy = &p.steps[p.step_index("deploy").unwrap()];
        assert_eq!(
            deploy.kind,
            StepKind::Http {
                url: "https://deployer.internal/deploy/{{ steps.build.output.sha }}".into(),
                headers: BTreeMap::from([(
                    "Authorization".into(),
                    "Bearer {{ input.token }}".into()
                )]),
                result_timeout_ms: Some(3_600_000),
            }
        );
        assert_eq!((deploy.timeout_ms, deploy.requires_approval), (Some(30_000), true));
        assert_eq!(kind("soak"), &StepKind::Sleep { for_ms: Some(900_000), until: None });
        assert_eq!(
            kind("window"),
            &StepKind::Sleep { for_ms: None, until: Some(1_796_119_200_000) }
        );
        assert_eq!(kind("label"), &StepKind::External { params: Some(json!({"anything": "json"})) });
        assert_eq!(p.steps[p.step_index("label").unwrap()].queue, "labeler");
        assert_eq!(kind("done"), &StepKind::Noop { output: None });
    }

    #[test]
    fn every_kind_round_trips_through_the_canonical_form() {
        let p = parse_toml(EVERY_KIND).unwrap();
        let canonical = serde_json::to_value(&p).unwrap();
        assert_eq!(validate(&canonical).unwrap(), p);
        assert_eq!(parse_json(&serde_json::to_string(&p).unwrap()).unwrap(), p);

        // The canonical spellings are the ones read back.
        let step = |name: &str| &canonical["steps"][p.step_index(name).unwrap()];
        assert_eq!(step("ci")["interval_ms"], 30_000);
        assert_eq!(step("ci")["watch_window_ms"], 1_800_000);
        assert_eq!(step("ci")["helper"]["timeout_ms"], 300_000);
        assert_eq!(step("deploy")["result_timeout_ms"], 3_600_000);
        assert_eq!(step("soak")["for_ms"], 900_000);
        assert_eq!(step("window")["until"], 1_796_119_200_000_i64);
        // An approval step carries the job options it does not use, at their defaults.
        assert_eq!(step("approve")["queue"], DEFAULT_QUEUE);
        assert_eq!(step("approve")["requires_approval"], false);
        assert!(step("approve").get("retry").is_some());
    }

    #[test]
    fn reports_every_problem_of_a_bad_gate_at_once() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "build", "kind": "noop"},
            {"name": "ci", "kind": "gate",
             "probe": {"run": ["", "{{ steps.deploy.output }}"], "env": {"SLUICE_X": "1"},
                       "colour": "blue"},
             "interval": "500ms", "max_polls": 0, "on_exhausted": "retry", "watch_window": "0s",
             "helper": {"kind": "sleep", "for": "1m"}, "max_attempts": 101,
             "max_probe_errors": 0, "every": "1m"},
            {"name": "deploy", "kind": "noop"},
        ]}));
        let expect = [
            ("steps[1].probe.run[0]", "the program must not be empty"),
            (
                "steps[1].probe.run[1]",
                "placeholder `{{ steps.deploy.output }}` names step `deploy`, which does not \
                 run before this step",
            ),
            (
                "steps[1].probe.env.SLUICE_X",
                "`SLUICE_X` is reserved: names starting with `SLUICE_` are set by sluice",
            ),
            ("steps[1].probe.colour", "unknown field; expected one of run, env, cwd"),
            ("steps[1].interval", "must be at least 1s"),
            ("steps[1].max_polls", "must be an integer between 1 and 100000"),
            ("steps[1].on_exhausted", "unknown policy `retry`; expected `fail`, `pass` or `rearm`"),
            ("steps[1].watch_window", "must be longer than zero"),
            (
                "steps[1].helper.kind",
                "a gate's helper cannot be of kind `sleep`; expected one of command, http, \
                 external, noop",
            ),
            ("steps[1].max_attempts", "must be an integer between 1 and 100"),
            ("steps[1].max_probe_errors", "must be an integer between 1 and 100"),
            (
                "steps[1].every",
                "unknown field; expected one of name, kind, queue, timeout, retry, \
                 requires_approval, probe, interval, max_polls, on_exhausted, watch_window, \
                 helper, max_attempts, max_probe_errors",
            ),
        ];
        for (field, message) in expect {
            assert_eq!(message_at(&problems, field), message, "at {field}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn gate_rules() {
        let gate = json!({"name": "g", "kind": "gate", "probe": {"url": "http://ci/status"},
                          "interval": "1s", "max_polls": 1});
        let helper_kinds = "expected one of command, http, external, noop";
        refused_each(&[
            (with(&gate, json!({"probe": null})), "steps[1].probe",
             "is required; give `run` (a command) or `url` (an HTTP GET)"),
            (with(&gate, json!({"interval": null})), "steps[1].interval",
             "is required; give the time between two probes, such as `30s`"),
            (with(&gate, json!({"max_polls": null})), "steps[1].max_polls",
             "is required; give how many probes may answer pending, such as `120`"),
            (with(&gate, json!({"probe": {"run": ["x"], "url": "http://x"}})), "steps[1].probe.url",
             "give either `run` (a command) or `url` (an HTTP GET), not both"),
            (with(&gate, json!({"probe": {}})), "steps[1].probe",
             "must have `run` (a command) or `url` (an HTTP GET)"),
            (with(&gate, json!({"probe": "http://x"})), "steps[1].probe",
             "must be a table with `run` (a command) or `url` (an HTTP GET), not a string"),
            (with(&gate, json!({"probe": {"url": "http://x", "method": "GET"}})),
             "steps[1].probe.method", "unknown field; expected one of url, headers"),
            (with(&gate, json!({"probe": {"url": "ftp://x"}})), "steps[1].probe.url",
             "`ftp://x` is not an `http://` or `https://` URL"),
            (with(&gate, json!({"probe": {"url": "http://x", "headers": {"a b": "1"}}})),
             r#"steps[1].probe.headers["a b"]"#,
             "`a b` is not a valid header name; use letters, digits and the HTTP token \
              characters such as `-`, `_` and `.`"),
            (with(&gate, json!({"probe": {"run": ["{{ steps.g.output }}"]}})),
             "steps[1].probe.run[0]",
             "placeholder `{{ steps.g.output }}` names step `g`, which does not run before \
              this step"),
            (with(&gate, json!({"interval": null, "interval_ms": 999})), "steps[1].interval_ms",
             "must be at least 1s"),
            (with(&gate, json!({"interval_ms": 1000})), "steps[1].interval",
             "give either `interval` or `interval_ms`, not both"),
            (with(&gate, json!({"max_polls": 100_001})), "steps[1].max_polls",
             "must be an integer between 1 and 100000"),
            (with(&gate, json!({"on_exhausted": 1})), "steps[1].on_exhausted",
             "must be a string: `fail`, `pass` or `rearm`"),
            (with(&gate, json!({"max_attempts": 2})), "steps[1].max_attempts",
             "has no effect without a `helper`: it bounds the runs of the helper"),
            (with(&gate, json!({"watch_window": "1m"})), "steps[1].watch_window",
             "only applies with `on_exhausted = \"pass\"`"),
            (with(&gate, json!({"on_exhausted": "rearm", "watch_window_ms": 60_000})),
             "steps[1].watch_window_ms", "only applies with `on_exhausted = \"pass\"`"),
            (with(&gate, json!({"helper": {"kind": "gate"}})), "steps[1].helper.kind",
             &format!("a gate's helper cannot be of kind `gate`; {helper_kinds}")),
            (with(&gate, json!({"helper": {"kind": "approval"}})), "steps[1].helper.kind",
             &format!("a gate's helper cannot be of kind `approval`; {helper_kinds}")),
            (with(&gate, json!({"helper": {"kind": "fix"}})), "steps[1].helper.kind",
             &format!("unknown kind `fix`; {helper_kinds}")),
            (with(&gate, json!({"helper": {"run": ["x"]}})), "steps[1].helper.kind",
             &format!("is required; {helper_kinds}")),
            (with(&gate, json!({"helper": ["x"]})), "steps[1].helper",
             "must be a table with `kind` and its fields, not an array"),
            (with(&gate, json!({"helper": {"kind": "noop", "name": "fix"}})),
             "steps[1].helper.name",
             "unknown field; expected one of kind, queue, timeout, retry, output"),
            (with(&gate, json!({"helper": {"kind": "command", "run": ["{{ steps.g.status }}"]}})),
             "steps[1].helper.run[0]",
             "placeholder `{{ steps.g.status }}` names step `g`, which does not run before \
              this step"),
            (with(&gate, json!({"helper": {"kind": "http", "url": "x"}})), "steps[1].helper.url",
             "`x` is not an `http://` or `https://` URL"),
            (with(&gate, json!({"helper": {"kind": "noop", "queue": "a b"}})),
             "steps[1].helper.queue",
             "`a b` is not a valid queue name; use 1 to 64 letters, digits, `.`, `_` or `-`"),
            (with(&gate, json!({"helper": {"kind": "noop", "timeout": "0s"}})),
             "steps[1].helper.timeout", "must be longer than zero"),
        ]);

        // Defaults, and `max_attempts = 1` (the default the canonical form writes) without a
        // helper.
        for step in [gate.clone(), with(&gate, json!({"max_attempts": 1}))] {
            let StepKind::Gate(def) = accepted(step).kind else { panic!("not a gate") };
            assert_eq!(def.on_exhausted, Exhaustion::Fail);
            assert_eq!((def.watch_window_ms, def.helper), (None, None));
            assert_eq!((def.max_attempts, def.max_probe_errors), (1, DEFAULT_MAX_PROBE_ERRORS));
        }
        // The helper runs on the gate's queue unless it names its own.
        let step = accepted(with(&gate, json!({"queue": "gates", "max_attempts": 100,
                                               "on_exhausted": "pass",
                                               "helper": {"kind": "noop", "output": 1}})));
        let StepKind::Gate(def) = step.kind else { panic!("not a gate") };
        let helper = def.helper.unwrap();
        assert_eq!((helper.queue.as_str(), def.max_attempts), ("gates", 100));
        assert_eq!(helper.kind, StepKind::Noop { output: Some(json!(1)) });
        assert_eq!((def.on_exhausted, def.watch_window_ms), (Exhaustion::Pass, None));
        let step = accepted(with(&gate, json!({"queue": "gates",
            "helper": {"kind": "external", "queue": "fixers", "params": {"x": 1}}})));
        let StepKind::Gate(def) = step.kind else { panic!("not a gate") };
        assert_eq!(def.helper.unwrap().queue, "fixers");
    }

    #[test]
    fn http_rules() {
        let http = json!({"name": "h", "kind": "http", "url": "http://deployer/deploy"});
        let not_before = "names step `h`, which does not run before this step";
        refused_each(&[
            (with(&http, json!({"url": null})), "steps[1].url",
             "is required; give an `http://` or `https://` URL"),
            (with(&http, json!({"url": 5})), "steps[1].url", "must be a string, not a number"),
            (with(&http, json!({"url": "deployer/deploy"})), "steps[1].url",
             "`deployer/deploy` is not an `http://` or `https://` URL"),
            (with(&http, json!({"url": "{{ input.url }}"})), "steps[1].url",
             "`{{ input.url }}` is not an `http://` or `https://` URL"),
            (with(&http, json!({"url": "http://"})), "steps[1].url", "`http://` names no host"),
            (with(&http, json!({"url": "https:///deploy"})), "steps[1].url",
             "`https:///deploy` names no host"),
            (with(&http, json!({"url": "http://x/a b"})), "steps[1].url",
             "`http://x/a b` holds whitespace; encode it as `%20`"),
            (with(&http, json!({"url": "http://x/{{ steps.h.output }}"})), "steps[1].url",
             &format!("placeholder `{{{{ steps.h.output }}}}` {not_before}")),
            (with(&http, json!({"url": "http://x/{{ input"})), "steps[1].url",
             "unterminated placeholder `{{ input`: missing the closing `}}`"),
            (with(&http, json!({"headers": {"Bad Name": "x"}})), r#"steps[1].headers["Bad Name"]"#,
             "`Bad Name` is not a valid header name; use letters, digits and the HTTP token \
              characters such as `-`, `_` and `.`"),
            (with(&http, json!({"headers": {"": "x"}})), r#"steps[1].headers[""]"#,
             "`` is not a valid header name; use letters, digits and the HTTP token \
              characters such as `-`, `_` and `.`"),
            (with(&http, json!({"headers": {"X-Token": "{{ steps.h.status }}"}})),
             "steps[1].headers.X-Token", &format!("placeholder `{{{{ steps.h.status }}}}` {not_before}")),
            (with(&http, json!({"headers": {"X": 1}})), "steps[1].headers.X",
             "must be a string, not a number"),
            (with(&http, json!({"headers": ["X: 1"]})), "steps[1].headers",
             "must be a table of strings"),
            (with(&http, json!({"result_timeout": "0s"})), "steps[1].result_timeout",
             "must be longer than zero"),
            (with(&http, json!({"result_timeout_ms": 0})), "steps[1].result_timeout_ms",
             "must be longer than zero"),
            (with(&http, json!({"result_timeout": "1h", "result_timeout_ms": 1})),
             "steps[1].result_timeout", "give either `result_timeout` or `result_timeout_ms`, not both"),
            (with(&http, json!({"method": "POST"})), "steps[1].method",
             "unknown field; expected one of name, kind, queue, timeout, retry, \
              requires_approval, url, headers, result_timeout"),
        ]);

        let step = accepted(with(&http, json!({
            "url": "HTTPS://{{ input.host }}:8443/x?sha={{ steps.a.output.sha }}",
            "headers": {"X-Api-Key": "{{ input.key }}", "Accept": "*/*", "x!#$%&'*+-.^_`|~": ""},
            "result_timeout_ms": 5000,
        })));
        let StepKind::Http { url, headers, result_timeout_ms } = step.kind else {
            panic!("not http")
        };
        assert_eq!(url, "HTTPS://{{ input.host }}:8443/x?sha={{ steps.a.output.sha }}");
        assert_eq!(headers.len(), 3);
        assert_eq!(result_timeout_ms, Some(5_000));
        let step = accepted(http.clone());
        let StepKind::Http { result_timeout_ms, .. } = step.kind else { panic!("not http") };
        assert_eq!(result_timeout_ms, None, "the default stays implicit");
    }

    #[test]
    fn external_params_are_kept_as_given() {
        let external = json!({"name": "x", "kind": "external", "queue": "labeler"});
        let step = accepted(with(&external, json!({"params": {"a": [1, {"b": null}]}})));
        assert_eq!(step.kind, StepKind::External { params: Some(json!({"a": [1, {"b": null}]})) });
        assert_eq!(step.queue, "labeler");
        for params in [json!({}), json!({"params": null})] {
            let step = accepted(with(&external, params));
            assert_eq!(step.kind, StepKind::External { params: None });
        }
        refused_each(&[(
            with(&external, json!({"run": ["x"]})),
            "steps[1].run",
            "unknown field; expected one of name, kind, queue, timeout, retry, requires_approval, \
             params",
        )]);
    }

    #[test]
    fn approval_rules() {
        let approval = json!({"name": "ok", "kind": "approval"});
        let no_job = "does not apply to an approval step: it runs no job";
        let between = "must be an integer between 1 and 100";
        refused_each(&[
            (with(&approval, json!({"required_approvals": 0})), "steps[1].required_approvals",
             between),
            (with(&approval, json!({"required_approvals": 101})), "steps[1].required_approvals",
             between),
            (with(&approval, json!({"required_approvals": "2"})), "steps[1].required_approvals",
             between),
            (with(&approval, json!({"approvers": "alice"})), "steps[1].approvers",
             "must be an array of token subjects or `role:<role>` entries"),
            (with(&approval, json!({"approvers": ["alice", " "]})), "steps[1].approvers[1]",
             "must not be empty"),
            (with(&approval, json!({"approvers": [1]})), "steps[1].approvers[0]",
             "must be a string, not a number"),
            (with(&approval, json!({"approvers": ["role:owner"]})), "steps[1].approvers[0]",
             "`role:owner` names no role; expected `role:admin`, `role:user` or `role:worker`"),
            (with(&approval, json!({"approvers": ["alice", "bob", "alice"]})),
             "steps[1].approvers[2]", "`alice` is listed twice (also steps[1].approvers[0])"),
            (with(&approval, json!({"required_approvals": 3, "approvers": ["alice", "bob"]})),
             "steps[1].required_approvals",
             "is 3 but only 2 approvers are listed: the step could never be approved"),
            (with(&approval, json!({"timeout": "1m"})), "steps[1].timeout", no_job),
            (with(&approval, json!({"timeout_ms": 1000})), "steps[1].timeout_ms", no_job),
            (with(&approval, json!({"retry": {"max_attempts": 5}})), "steps[1].retry", no_job),
            (with(&approval, json!({"queue": "humans"})), "steps[1].queue", no_job),
            (with(&approval, json!({"requires_approval": true})), "steps[1].requires_approval",
             "does not apply to an approval step: the step itself waits for approval"),
            (with(&approval, json!({"run": ["x"]})), "steps[1].run",
             "unknown field; expected one of name, kind, required_approvals, approvers"),
        ]);

        // Last step, defaults.
        let plain = accepted(approval.clone());
        assert_eq!(plain.kind, StepKind::Approval { required_approvals: 1, approvers: Vec::new() });
        assert_eq!((plain.queue.as_str(), plain.timeout_ms), (DEFAULT_QUEUE, None));
        // A role admits any number of people; listed subjects can make the quorum.
        for approvers in [json!(["role:user"]), json!(["alice", "bob"]), json!([])] {
            let step =
                accepted(with(&approval, json!({"required_approvals": 2, "approvers": approvers})));
            let StepKind::Approval { required_approvals, .. } = step.kind else {
                panic!("not an approval")
            };
            assert_eq!(required_approvals, 2);
        }
        // What the canonical form writes for the job options passes.
        let canonical = with(&approval, json!({"queue": DEFAULT_QUEUE, "requires_approval": false,
            "retry": serde_json::to_value(RetryPolicy::default()).unwrap()}));
        assert_eq!(accepted(canonical), plain);
    }

    #[test]
    fn sleep_rules() {
        let sleep = json!({"name": "s", "kind": "sleep"});
        let not_an_instant = |text: &str| {
            format!("`{text}` is not an RFC 3339 instant such as `2026-12-01T10:00:00Z`")
        };
        refused_each(&[
            (sleep.clone(), "steps[1].for",
             "is required: give `for` (a duration such as `10m`) or `until` (an RFC 3339 \
              instant such as `2026-12-01T10:00:00Z`)"),
            (with(&sleep, json!({"for": "0s"})), "steps[1].for", "must be longer than zero"),
            (with(&sleep, json!({"for_ms": 0})), "steps[1].for_ms", "must be longer than zero"),
            (with(&sleep, json!({"for": "10"})), "steps[1].for",
             "`10` is missing a unit after 10; use ms, s, m, h or d"),
            (with(&sleep, json!({"for": "1m", "until": "2026-12-01T10:00:00Z"})), "steps[1].for",
             "give either `for` or `until`, not both"),
            (with(&sleep, json!({"for_ms": 1, "until": 0})), "steps[1].for_ms",
             "give either `for` or `until`, not both"),
            (with(&sleep, json!({"until": "2026-12-01"})), "steps[1].until",
             &not_an_instant("2026-12-01")),
            (with(&sleep, json!({"until": "2026-12-01T10:00Z"})), "steps[1].until",
             &not_an_instant("2026-12-01T10:00Z")),
            (with(&sleep, json!({"until": "2026-02-30T10:00:00Z"})), "steps[1].until",
             &not_an_instant("2026-02-30T10:00:00Z")),
            (with(&sleep, json!({"until": "tomorrow"})), "steps[1].until",
             &not_an_instant("tomorrow")),
            (with(&sleep, json!({"until": "2026-12-01T10:00:00"})), "steps[1].until",
             "`2026-12-01T10:00:00` has no UTC offset; end it with `Z` or an offset such as \
              `+02:00`"),
            (with(&sleep, json!({"until": true})), "steps[1].until",
             "must be an RFC 3339 instant such as `2026-12-01T10:00:00Z`, not a boolean"),
            (with(&sleep, json!({"until": 1.5})), "steps[1].until",
             "must be an integer (milliseconds since the epoch)"),
            (with(&sleep, json!({"for": "1m", "run": ["sleep"]})), "steps[1].run",
             "unknown field; expected one of name, kind, queue, timeout, retry, \
              requires_approval, for, until"),
        ]);

        let until = |value: Value| match accepted(with(&sleep, json!({"until": value}))).kind {
            StepKind::Sleep { for_ms: None, until: Some(until) } => until,
            other => panic!("{other:?}"),
        };
        assert_eq!(until(json!("2026-12-01T10:00:00Z")), 1_796_119_200_000);
        assert_eq!(until(json!("2026-12-01 12:00:00.5+02:00")), 1_796_119_200_500);
        assert_eq!(until(json!(1_796_119_200_000_i64)), 1_796_119_200_000);
        assert_eq!(until(json!(-1)), -1);
        let step = accepted(with(&sleep, json!({"for": "1h30m"})));
        assert_eq!(step.kind, StepKind::Sleep { for_ms: Some(5_400_000), until: None });
    }

    #[test]
    fn rfc3339_instants_become_milliseconds_since_the_epoch() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1_000),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("2024-02-29T00:00:00-05:30", 1_709_184_600_000),
            ("2026-12-01T10:00:00.123456789Z", 1_796_119_200_123),
            ("2026-12-31T23:59:60Z", 1_798_761_600_000),
        ] {
            assert_eq!(rfc3339_millis(text), Ok(ms), "{text}");
        }
        for text in ["", "2026-12-01T10:00:00+25:00", "2026-13-01T10:00:00Z", "10:00:00Z"] {
            assert!(rfc3339_millis(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_pipeline_reference_covers_every_kind_and_its_example_is_valid() {
        let doc = include_str!("../../docs/pipelines.md");
        for kind in KINDS {
            assert!(doc.contains(&format!("\n### `{kind}`\n")), "no section for `{kind}`");
        }
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("an example in a toml block");
        let p = parse_toml(example).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(p.steps.len(), 6);
    }

    #[test]
    fn conditions_are_refused_and_approval_is_refused_only_on_the_last_step() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "noop", "requires_approval": true, "if": "x == 1"},
            {"name": "b", "kind": "noop", "requires_approval": false},
            {"name": "c", "kind": "noop", "requires_approval": true},
        ]}));
        assert_eq!(fields(&problems), ["steps[0].if", "steps[2].requires_approval"]);
        assert_eq!(
            message_at(&problems, "steps[0].if"),
            "conditions (`if`) are not available in this release"
        );
        assert_eq!(
            message_at(&problems, "steps[2].requires_approval"),
            "must not be set on the last step: there is no later step to approve"
        );

        let p = validate(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "command", "run": ["x"], "requires_approval": true},
            {"name": "b", "kind": "noop", "requires_approval": false},
        ]}))
        .unwrap();
        assert!(p.steps[0].requires_approval);
        assert!(!p.steps[1].requires_approval);
    }

    #[test]
    fn placeholders_are_checked_against_earlier_steps() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "command", "run": ["x", "{{ steps.a.output }}"]},
            {"name": "b", "kind": "command",
             "run": ["{{ steps.a.output.x.0 }}", "{{ steps.a.status }}", "{{ input }}",
                     "{{ execution.id }}{{ execution.step }}", "{{ steps.nope.output }}",
                     "{{ steps.a.result }}", "{{ steps.a }}", "{{ steps }}", "{{ env.HOME }}",
                     "{{ execution.user }}", "{{ execution.id.x }}", "{{ steps.a.status.x }}",
                     "{{ input.x", "{{ }}"],
             "env": {"A": "{{ steps.c.output }}", "B": "{{ input.y }}"},
             "cwd": "{{ steps.b.output }}"},
            {"name": "c", "kind": "command", "run": ["x"]},
        ]}));
        let expect = [
            (
                "steps[0].run[1]",
                "placeholder `{{ steps.a.output }}` names step `a`, which does not run before this step",
            ),
            (
                "steps[1].run[4]",
                "placeholder `{{ steps.nope.output }}` names no step of this pipeline",
            ),
            (
                "steps[1].run[5]",
                "placeholder `{{ steps.a.result }}` must continue with `output` or `status` after the step name (`steps.a.output…` or `steps.a.status`)",
            ),
            (
                "steps[1].run[6]",
                "placeholder `{{ steps.a }}` must continue with `output` or `status` after the step name (`steps.a.output…` or `steps.a.status`)",
            ),
            (
                "steps[1].run[7]",
                "placeholder `{{ steps }}` must name a step: `steps.<name>.output…` or `steps.<name>.status`",
            ),
            (
                "steps[1].run[8]",
                "placeholder `{{ env.HOME }}` starts with `env`; expected `input`, `execution` or `steps`",
            ),
            (
                "steps[1].run[9]",
                "placeholder `{{ execution.user }}` names nothing; `execution` offers `execution.id`, `execution.pipeline`, `execution.run`, `execution.target`, `execution.step`",
            ),
            (
                "steps[1].run[10]",
                "placeholder `{{ execution.id.x }}` names nothing; `execution` offers `execution.id`, `execution.pipeline`, `execution.run`, `execution.target`, `execution.step`",
            ),
            (
                "steps[1].run[11]",
                "placeholder `{{ steps.a.status.x }}` must continue with `output` or `status` after the step name (`steps.a.output…` or `steps.a.status`)",
            ),
            ("steps[1].run[12]", "unterminated placeholder `{{ input.x`: missing the closing `}}`"),
            ("steps[1].run[13]", "empty placeholder `{{ }}`: expected a path such as `input.name`"),
            (
                "steps[1].env.A",
                "placeholder `{{ steps.c.output }}` names step `c`, which does not run before this step",
            ),
            (
                "steps[1].cwd",
                "placeholder `{{ steps.b.output }}` names step `b`, which does not run before this step",
            ),
        ];
        for (field, message) in expect {
            assert_eq!(message_at(&problems, field), message, "at {field}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn several_bad_placeholders_in_one_string_are_all_reported() {
        let problems = problems_of(&one_step(
            json!({"name": "a", "kind": "command", "run": ["{{ x.y }} {{ steps.z.output }}"]}),
        ));
        assert_eq!(fields(&problems), ["steps[0].run[0]", "steps[0].run[0]"]);
    }

    #[test]
    fn canonical_json_round_trips() {
        let p = parse_toml(VALID).unwrap();
        let canonical = serde_json::to_value(&p).unwrap();
        assert!(canonical["steps"][1].get("timeout_ms").is_some(), "{canonical}");
        assert!(canonical["steps"][1]["retry"].get("initial_ms").is_some(), "{canonical}");
        assert_eq!(validate(&canonical).unwrap(), p);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(parse_json(&text).unwrap(), p);

        let noop = parse_toml(
            "id = \"n\"\n[[steps]]\nname = \"a\"\nkind = \"noop\"\noutput = [1, {a = 2}]\n\
             [[steps]]\nname = \"b\"\nkind = \"noop\"\nqueue = \"q\"",
        )
        .unwrap();
        assert_eq!(validate(&serde_json::to_value(&noop).unwrap()).unwrap(), noop);
    }

    #[test]
    fn reads_json_files() {
        let p = parse_json(
            r#"{"id": "j", "steps": [{"name": "a", "kind": "command", "run": ["echo", "{{ input.x }}"],
                "timeout": "30s", "retry": {"max_ms": 5000, "initial": "1s"}}]}"#,
        )
        .unwrap();
        assert_eq!(p.steps[0].timeout_ms, Some(30_000));
        assert_eq!((p.steps[0].retry.initial_ms, p.steps[0].retry.max_ms), (1_000, 5_000));
        let problems = parse_json(r#"{"id": "j", "steps": [{"name": "a"}]}"#).unwrap_err();
        assert_eq!(fields(&problems), ["steps[0].kind"]);
        let problems = parse_json("{not json").unwrap_err();
        assert_eq!(fields(&problems), [""]);
        assert!(problems[0].message.starts_with("is not valid JSON"));
    }

    #[test]
    fn text_that_is_not_toml_is_one_problem_on_the_document() {
        let problems = toml_problems("id = \n[[steps]\n");
        assert_eq!(fields(&problems), [""]);
        assert!(problems[0].message.starts_with("is not valid TOML"), "{problems:?}");
    }

    #[test]
    fn adversarial_inputs_do_not_panic() {
        // Deep nesting, inside a noop output and where a table is expected.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let text = format!(
            r#"{{"id": "d", "steps": [{{"name": "a", "kind": "noop", "output": {deep}}}]}}"#
        );
        assert!(parse_json(&text).is_ok());
        let text = format!(r#"{{"id": "d", "steps": {deep}, "name": {deep}}}"#);
        assert!(parse_json(&text).is_err());
        let deeper = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json(&deeper).is_err());
        assert!(parse_toml(&format!("x = {deeper}")).is_err());

        // Huge and odd numbers.
        for n in ["1e400", "18446744073709551616", "-1", "1.5", "-0", "1e2"] {
            let text = format!(
                r#"{{"id": "n", "steps": [{{"name": "a", "kind": "noop", "timeout_ms": {n},
                     "retry": {{"max_attempts": {n}, "initial_ms": {n}, "max_ms": {n}}}}}]}}"#
            );
            let _ = parse_json(&text);
        }
        assert!(parse_toml("id = \"n\"\n[[steps]]\nname = \"a\"\nkind = \"noop\"\ntimeout = \"99999999999999999999d\"").is_err());
        let p = parse_json(r#"{"id": "n", "steps": [{"name": "a", "kind": "noop", "timeout_ms": 18446744073709551615}]}"#).unwrap();
        assert_eq!(p.steps[0].timeout_ms, Some(u64::MAX));

        // Unicode everywhere, including multi-byte characters next to braces.
        let problems = problems_of(&json!({
            "id": "ïd", "name": "名前", "ключ": 1,
            "steps": [{"name": "ビルド", "kind": "命令", "queue": "é",
                       "run": ["{{ ü }}", "{{é", "x{{ input.é}}"], "env": {"É": "{{"}}],
        }));
        assert!(problems.iter().any(|p| p.field == "ключ"));
        assert!(problems.iter().any(|p| p.field == "steps[0].name"));
        let problems = problems_of(&one_step(
            json!({"name": "a", "kind": "command", "run": ["é{{ ü }}é", "{{é", "}}é{{", "{{{{}}}}"], "env": {"É": "{{"}}),
        ));
        assert_eq!(problems.len(), 6, "{problems:#?}");

        // Long text is quoted short.
        let long = "x".repeat(100_000);
        let problems = problems_of(&json!({"id": long, "steps": [{"name": long, "kind": long}]}));
        assert!(problems.iter().all(|p| p.message.len() < 400), "{problems:#?}");
    }

    /// A random JSON tree drawn from values that look like pipeline parts.
    fn random_value(next: &mut impl FnMut() -> usize, depth: usize) -> Value {
        const KEYS: &[&str] = &[
            "id",
            "name",
            "kind",
            "steps",
            "run",
            "env",
            "cwd",
            "retry",
            "timeout",
            "timeout_ms",
            "initial",
            "max_ms",
            "max_attempts",
            "backoff",
            "jitter",
            "output",
            "queue",
            "if",
            "requires_approval",
            "X",
        ];
        const STRINGS: &[&str] = &[
            "",
            "a",
            "b",
            "command",
            "noop",
            "gate",
            "http",
            "external",
            "approval",
            "sleep",
            "http://x/{{ steps.a.output }}",
            "role:user",
            "pass",
            "2026-12-01T10:00:00Z",
            "10s",
            "0s",
            "fixed",
            "{{ steps.a.output }}",
            "{{ steps.b.status }}",
            "{{ input.x }}",
            "{{",
            "{{ }}",
            "é",
            "SLUICE_X",
        ];
        // The keys of every kind too.
        let kinds = KINDS.iter().filter_map(|name| Kind::from_name(name));
        let keys: Vec<&str> = kinds
            .flat_map(|kind| [kind.keys(), kind.canonical_keys()].concat())
            .chain(KEYS.iter().copied())
            .collect();
        let choice = if depth == 0 { next() % 4 } else { next() % 6 };
        match choice {
            0 => Value::from(next() as u64 % 200),
            1 => Value::String(STRINGS[next() % STRINGS.len()].to_string()),
            2 => Value::Bool(next() & 1 == 0),
            3 => json!(-1.5),
            4 => Value::Array((0..next() % 4).map(|_| random_value(next, depth - 1)).collect()),
            _ => Value::Object(
                (0..next() % 6)
                    .map(|_| {
                        let key = keys[next() % keys.len()].to_string();
                        (key, random_value(next, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_documents_never_panic_and_accepted_ones_round_trip() {
        let mut next = numbers(0xfeed);
        for _ in 0..5_000 {
            let steps: Vec<Value> = (0..next() % 4).map(|_| random_value(&mut next, 3)).collect();
            let doc = json!({ "id": "p", "steps": steps });
            for value in [&doc, &random_value(&mut next, 4)] {
                let _ = checked(value);
            }
        }
    }

    #[test]
    fn altered_steps_of_every_kind_never_panic_and_accepted_ones_round_trip() {
        let base = crate::pipeline::toml_to_json(toml::from_str(EVERY_KIND).unwrap());
        let mut next = numbers(0xbeef);
        let mut accepted = 0;
        for _ in 0..3_000 {
            let mut doc = base.clone();
            let steps = doc["steps"].as_array_mut().unwrap();
            for _ in 0..=next() % 2 {
                // A field of one step removed, replaced, or taken from another step.
                let (i, j) = (next() % steps.len(), next() % steps.len());
                let keys: Vec<String> = steps[i].as_object().unwrap().keys().cloned().collect();
                let key = &keys[next() % keys.len()];
                let donor = steps[j].as_object().unwrap();
                let value = match next() % 3 {
                    0 => None,
                    1 => Some(random_value(&mut next, 2)),
                    _ => donor.values().nth(next() % donor.len()).cloned(),
                };
                let step = steps[i].as_object_mut().unwrap();
                match value {
                    None => step.remove(key),
                    Some(value) => step.insert(key.clone(), value),
                };
            }
            accepted += usize::from(checked(&doc));
        }
        assert!(accepted > 200, "only {accepted} altered documents were accepted");
    }

    /// A reproducible stream of pseudo-random numbers.
    fn numbers(mut seed: u64) -> impl FnMut() -> usize {
        move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        }
    }

    /// Validates `value`: a refusal names problems, an accepted pipeline reads back the same
    /// from its canonical form. True when it was accepted.
    fn checked(value: &Value) -> bool {
        match validate(value) {
            Ok(p) => {
                let canonical = serde_json::to_value(&p).unwrap();
                assert_eq!(validate(&canonical).unwrap(), p, "{value}");
                true
            }
            Err(problems) => {
                assert!(!problems.is_empty());
                false
            }
        }
    }
}
