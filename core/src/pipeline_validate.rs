//! Validation of pipeline documents: walks a JSON value tree, collects every problem.
//!
//! [`validate`] is the single gate between a document (a TOML file converted to JSON, a JSON
//! file, or the canonical JSON of a stored [`Pipeline`]) and the typed model. It never
//! stops at the first problem: every field is checked and each problem names the path of its
//! field (`steps[1].retry.initial`, `steps[2].run[0]`, `steps[0].env.FOO`). It never panics,
//! whatever the input.
//!
//! Both the file form and the canonical form are accepted:
//! - `timeout = "30s"` or `timeout_ms = 30000` (not both);
//! - in `retry`, `initial`/`initial_ms` and `max`/`max_ms` likewise;
//! - `requires_approval = false` (always written by the canonical form).
//!
//! The checks run in two passes: the first collects the step names, so that a placeholder
//! `{{ steps.<name>.… }}` can be checked against the steps that run before its own.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::{describe, duration};
use crate::pipeline::{DEFAULT_QUEUE, Pipeline, Problem, QUEUE_NAME_RULE, StepDef, StepKind, is_queue_name};

/// Kinds the checker reads so far.
const KINDS: &[&str] = &["command", "noop"];
/// Kinds not read yet.
const PLANNED_KINDS: &[&str] = &["http", "external", "gate", "approval", "sleep"];
use crate::retry::{Backoff, RetryPolicy};
use crate::template;

/// Most steps a pipeline may have.
const MAX_STEPS: usize = 256;
/// Longest pipeline name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest id or step name, in characters (queue names: [`is_queue_name`]).
const MAX_IDENT_CHARS: usize = 64;
/// Bounds of `retry.max_attempts`.
const ATTEMPTS: std::ops::RangeInclusive<u64> = 1..=100;
/// Whether `requires_approval = true` is accepted by this release.
const APPROVAL_AVAILABLE: bool = false;
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
const COMMAND_KEYS: &[&str] = &["run", "env", "cwd"];
const NOOP_KEYS: &[&str] = &["output"];
/// Keys of `retry`, as listed in messages.
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "initial", "max", "jitter"];
const RETRY_ACCEPTED: &[&str] =
    &["max_attempts", "backoff", "initial", "initial_ms", "max", "max_ms", "jitter"];
/// Second segments of `{{ execution.… }}`.
const EXECUTION_FIELDS: &[&str] = &["id", "pipeline", "run", "target", "step"];
/// Environment variable prefix reserved for the variables sluice sets itself.
const RESERVED_ENV_PREFIX: &str = "SLUICE_";

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

/// The kind named by a step, as far as it could be read.
enum KindName {
    Command,
    Noop,
    /// Missing, not a string, planned or unknown: already reported; the kind's own keys
    /// are not checked.
    Unusable,
}

/// What a step may refer to: the index of the first step with each name.
type StepNames<'a> = HashMap<&'a str, usize>;

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
            .map(|(i, item)| self.step(item, i, i == last, &names))
            .collect();
        steps.into_iter().collect()
    }

    // ----- one step ----------------------------------------------------------------------

    fn step(
        &mut self,
        value: &Value,
        i: usize,
        is_last: bool,
        names: &StepNames<'_>,
    ) -> Option<StepDef> {
        let at = format!("steps[{i}]");
        let Some(map) = value.as_object() else {
            self.problem(&at, format!("must be a table, not {}", kind_of(value)));
            return None;
        };

        let name = self.step_name(map.get("name"), &at, i, names);
        let kind_name = self.kind_name(map.get("kind"), &at);
        let queue = match map.get("queue") {
            None => Some(DEFAULT_QUEUE.to_string()),
            Some(v) => self.queue(v, &field(&at, "queue")),
        };
        let timeout_ms = self.timeout(map, &at);
        let retry = match map.get("retry") {
            None => Some(RetryPolicy::default()),
            Some(v) => self.retry(v, &field(&at, "retry")),
        };
        let requires_approval = match map.get("requires_approval") {
            None => Some(false),
            Some(v) => self.approval(v, &field(&at, "requires_approval"), is_last),
        };
        if map.contains_key("if") {
            self.problem(field(&at, "if"), "conditions (`if`) are not available in this release");
        }

        let kind = match kind_name {
            KindName::Command => {
                self.unknown_keys(
                    map,
                    &at,
                    &[COMMON_ACCEPTED, COMMAND_KEYS].concat(),
                    &[COMMON_KEYS, COMMAND_KEYS].concat(),
                );
                self.command(map, &at, i, names)
            }
            KindName::Noop => {
                self.unknown_keys(
                    map,
                    &at,
                    &[COMMON_ACCEPTED, NOOP_KEYS].concat(),
                    &[COMMON_KEYS, NOOP_KEYS].concat(),
                );
                Some(noop(map))
            }
            KindName::Unusable => None,
        };

        Some(StepDef {
            name: name?,
            queue: queue?,
            timeout_ms: timeout_ms?,
            retry: retry?,
            requires_approval: requires_approval?,
            kind: kind?,
        })
    }

    fn step_name(
        &mut self,
        value: Option<&Value>,
        at: &str,
        i: usize,
        names: &StepNames<'_>,
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
        match names.get(name) {
            Some(&first) if first < i => {
                self.problem(at, format!("duplicate step name `{name}` (also steps[{first}])"));
                None
            }
            _ => Some(name.to_string()),
        }
    }

    fn kind_name(&mut self, value: Option<&Value>, at: &str) -> KindName {
        let at = field(at, "kind");
        let Some(value) = value else {
            self.problem(at, format!("is required; expected one of {}", KINDS.join(", ")));
            return KindName::Unusable;
        };
        let Some(kind) = self.string(value, &at) else {
            return KindName::Unusable;
        };
        match kind {
            "command" => KindName::Command,
            "noop" => KindName::Noop,
            planned if PLANNED_KINDS.contains(&planned) => {
                self.problem(
                    at,
                    format!(
                        "kind `{planned}` is not available in this release (available: {})",
                        KINDS.join(", ")
                    ),
                );
                KindName::Unusable
            }
            other => {
                self.problem(
                    at,
                    format!(
                        "unknown kind `{}`; expected one of {} (planned, not yet available: {})",
                        quote(other),
                        KINDS.join(", "),
                        PLANNED_KINDS.join(", ")
                    ),
                );
                KindName::Unusable
            }
        }
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

    /// The step's time limit; `Some(None)` when it has none.
    fn timeout(&mut self, map: &Map<String, Value>, at: &str) -> Option<Option<u64>> {
        let ms = self.duration_pair(map, at, "timeout", "timeout_ms")?;
        match ms {
            Some(0) => {
                let key = if map.contains_key("timeout") { "timeout" } else { "timeout_ms" };
                self.problem(field(at, key), "must be longer than zero");
                None
            }
            other => Some(other),
        }
    }

    fn approval(&mut self, value: &Value, at: &str, is_last: bool) -> Option<bool> {
        let requires = self.boolean(value, at)?;
        match approval_problem(requires, is_last, APPROVAL_AVAILABLE) {
            Some(message) => {
                self.problem(at, message);
                None
            }
            None => Some(requires),
        }
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
            Some(v) => self.attempts(v, &field(at, "max_attempts")),
        };
        let backoff = match map.get("backoff") {
            None => Some(defaults.backoff),
            Some(v) => self.backoff(v, &field(at, "backoff")),
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

    fn attempts(&mut self, value: &Value, at: &str) -> Option<u32> {
        let attempts =
            value.as_u64().filter(|n| ATTEMPTS.contains(n)).and_then(|n| u32::try_from(n).ok());
        if attempts.is_none() {
            let (low, high) = (ATTEMPTS.start(), ATTEMPTS.end());
            self.problem(at, format!("must be an integer between {low} and {high}"));
        }
        attempts
    }

    fn backoff(&mut self, value: &Value, at: &str) -> Option<Backoff> {
        match value.as_str() {
            Some("fixed") => Some(Backoff::Fixed),
            Some("exponential") => Some(Backoff::Exponential),
            Some(other) => {
                self.problem(
                    at,
                    format!(
                        "unknown backoff `{}`; expected `fixed` or `exponential`",
                        quote(other)
                    ),
                );
                None
            }
            None => {
                self.problem(at, "must be a string: `fixed` or `exponential`");
                None
            }
        }
    }

    // ----- durations ---------------------------------------------------------------------

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

    // ----- kinds -------------------------------------------------------------------------

    fn command(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        i: usize,
        names: &StepNames<'_>,
    ) -> Option<StepKind> {
        let run = self.run(map.get("run"), at, i, names);
        let env = match map.get("env") {
            None => Some(BTreeMap::new()),
            Some(v) => self.env(v, &field(at, "env"), i, names),
        };
        let cwd = match map.get("cwd") {
            None => Some(None),
            Some(v) => self.cwd(v, &field(at, "cwd"), i, names).map(Some),
        };
        Some(StepKind::Command { run: run?, env: env?, cwd: cwd? })
    }

    fn run(
        &mut self,
        value: Option<&Value>,
        at: &str,
        i: usize,
        names: &StepNames<'_>,
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
        let mut run = Some(Vec::with_capacity(items.len()));
        for (k, item) in items.iter().enumerate() {
            let item_at = format!("{at}[{k}]");
            let arg = match item.as_str() {
                Some("") if k == 0 => {
                    self.problem(&item_at, "the program must not be empty");
                    None
                }
                Some(arg) => self.templated(arg, &item_at, i, names).then(|| arg.to_string()),
                None => {
                    self.problem(&item_at, format!("must be a string, not {}", kind_of(item)));
                    None
                }
            };
            run = run.zip(arg).map(|(mut run, arg)| {
                run.push(arg);
                run
            });
        }
        run
    }

    fn env(
        &mut self,
        value: &Value,
        at: &str,
        i: usize,
        names: &StepNames<'_>,
    ) -> Option<BTreeMap<String, String>> {
        let Some(map) = value.as_object() else {
            self.problem(at, "must be a table of strings");
            return None;
        };
        let mut env = Some(BTreeMap::new());
        for (key, value) in map {
            let var_at = field(at, key);
            let key_ok = self.env_key(key, &var_at);
            let value = match value.as_str() {
                Some(text) => self.templated(text, &var_at, i, names).then(|| text.to_string()),
                None => {
                    self.problem(&var_at, format!("must be a string, not {}", kind_of(value)));
                    None
                }
            };
            env = match (env, key_ok, value) {
                (Some(mut env), true, Some(value)) => {
                    env.insert(key.clone(), value);
                    Some(env)
                }
                _ => None,
            };
        }
        env
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

    fn cwd(&mut self, value: &Value, at: &str, i: usize, names: &StepNames<'_>) -> Option<String> {
        let cwd = self.string(value, at)?;
        if cwd.is_empty() {
            self.problem(at, "must not be empty");
            return None;
        }
        self.templated(cwd, at, i, names).then(|| cwd.to_string())
    }

    // ----- placeholders ------------------------------------------------------------------

    /// Checks the placeholders of a `run`, `env` or `cwd` string of step `i`; true when all
    /// are valid.
    fn templated(&mut self, text: &str, at: &str, i: usize, names: &StepNames<'_>) -> bool {
        let found = match template::placeholders(text) {
            Ok(found) => found,
            Err(message) => {
                self.problem(at, message);
                return false;
            }
        };
        let before = self.problems.len();
        for placeholder in &found {
            if let Some(message) = placeholder_problem(placeholder, i, names) {
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

/// The output of a `noop` step (`null` is the same as none, as in the typed model).
fn noop(map: &Map<String, Value>) -> StepKind {
    StepKind::Noop { output: map.get("output").filter(|v| !v.is_null()).cloned() }
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

/// What is wrong with `requires_approval = requires` on a step, if anything.
fn approval_problem(requires: bool, is_last: bool, available: bool) -> Option<&'static str> {
    if !requires {
        None
    } else if !available {
        Some("requires_approval is not available in this release")
    } else if is_last {
        Some("must not be set on the last step: there is no later step to approve")
    } else {
        None
    }
}

/// What is wrong with a placeholder in step `i`, if anything.
fn placeholder_problem(
    p: &template::Placeholder,
    i: usize,
    names: &StepNames<'_>,
) -> Option<String> {
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
        ["steps", step, rest @ ..] => match names.get(step) {
            None => Some(format!("placeholder `{p}` names no step of this pipeline")),
            Some(&j) if j >= i => Some(format!(
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

/// `field` under `parent`: `parent.key`, or `key` at the top level.
fn field(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
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
        assert!(
            message_at(&problems, "steps[2].kind")
                .starts_with("unknown kind `foo`; expected one of command, noop"),
            "{problems:#?}"
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
    fn kinds_planned_unknown_and_missing() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "gate", "url": "x", "whatever": 1},
            {"name": "b", "kind": "foo", "bar": 1},
            {"name": "c"},
            {"name": "d", "kind": "noop", "run": ["x"]},
            {"name": "e", "kind": "command", "run": ["x"], "output": 1},
        ]}));
        assert_eq!(
            fields(&problems),
            ["steps[0].kind", "steps[1].kind", "steps[2].kind", "steps[3].run", "steps[4].output"]
        );
        assert_eq!(
            message_at(&problems, "steps[0].kind"),
            "kind `gate` is not available in this release (available: command, noop)"
        );
        assert_eq!(
            message_at(&problems, "steps[2].kind"),
            "is required; expected one of command, noop"
        );
        assert_eq!(
            message_at(&problems, "steps[3].run"),
            "unknown field; expected one of name, kind, queue, timeout, retry, requires_approval, \
             output"
        );
        for planned in PLANNED_KINDS {
            let problems = problems_of(&one_step(json!({"name": "a", "kind": planned})));
            assert!(message_at(&problems, "steps[0].kind").contains("not available"));
        }
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
                "steps[3].env.",
                "steps[3].env.1X",
                "steps[3].env.A-B",
                "steps[3].env.SLUICE_TOKEN",
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
    fn approval_and_conditions_are_refused_for_now() {
        let problems = problems_of(&json!({"id": "p", "steps": [
            {"name": "a", "kind": "noop", "requires_approval": true, "if": "x == 1"},
            {"name": "b", "kind": "noop", "requires_approval": false},
        ]}));
        assert_eq!(
            message_at(&problems, "steps[0].requires_approval"),
            "requires_approval is not available in this release"
        );
        assert_eq!(
            message_at(&problems, "steps[0].if"),
            "conditions (`if`) are not available in this release"
        );
        assert_eq!(problems.len(), 2);
    }

    #[test]
    fn approval_is_never_allowed_on_the_last_step_once_available() {
        assert_eq!(approval_problem(false, true, true), None);
        assert_eq!(approval_problem(true, false, true), None);
        assert!(approval_problem(true, true, true).unwrap().contains("last step"));
        assert!(approval_problem(true, false, false).unwrap().contains("not available"));
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
        let choice = if depth == 0 { next() % 4 } else { next() % 6 };
        match choice {
            0 => Value::from(next() as u64 % 200),
            1 => Value::String(STRINGS[next() % STRINGS.len()].to_string()),
            2 => Value::Bool(next() & 1 == 0),
            3 => json!(-1.5),
            4 => Value::Array((0..next() % 4).map(|_| random_value(next, depth - 1)).collect()),
            _ => Value::Object(
                (0..next() % 6)
                    .map(|_| (KEYS[next() % KEYS.len()].to_string(), random_value(next, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_documents_never_panic_and_accepted_ones_round_trip() {
        let mut seed: u64 = 0xfeed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..5_000 {
            let steps: Vec<Value> = (0..next() % 4).map(|_| random_value(&mut next, 3)).collect();
            let doc = json!({ "id": "p", "steps": steps });
            for value in [&doc, &random_value(&mut next, 4)] {
                match validate(value) {
                    Ok(p) => {
                        let canonical = serde_json::to_value(&p).unwrap();
                        assert_eq!(validate(&canonical).unwrap(), p);
                    }
                    Err(problems) => assert!(!problems.is_empty()),
                }
            }
        }
    }
}
