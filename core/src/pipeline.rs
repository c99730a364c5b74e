//! Pipeline definitions: the typed model, and parsing with validation from TOML or JSON.
//!
//! Parsing never stops at the first problem: a file is read into a generic value tree, then
//! every field is checked and every problem is reported with the path of its field
//! (`steps[1].retry.initial`). Only a document with no problems becomes a [`Pipeline`].
//!
//! The typed model serialises (serde) to the canonical JSON form stored in Redis and served
//! by the API; that form uses milliseconds for durations. The *file* form (what users write)
//! uses duration strings (`"10s"`) and is read by [`parse_toml`] / [`parse_json`] /
//! [`from_value`]; the canonical JSON is also accepted by [`from_value`] so a stored pipeline
//! can be re-read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::retry::RetryPolicy;

/// The queue a step runs on when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// What a queue name may be, worded to follow "is not a valid queue name; ".
pub const QUEUE_NAME_RULE: &str = "use 1 to 64 letters, digits, `.`, `_` or `-`";

/// Whether `name` is a valid queue name (`^[A-Za-z0-9._-]{1,64}$`, see [`QUEUE_NAME_RULE`]).
/// Pipelines, the HTTP API and the worker configuration all check queue names with it.
pub fn is_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One problem found in a pipeline document.
///
/// Documented as `FieldProblem`: `Problem` names the HTTP API's error document.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = FieldProblem))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path of the field, e.g. `steps[1].retry.initial`; empty for the whole document.
    pub field: String,
    /// What is wrong, as a sentence fragment that reads after the field name.
    pub message: String,
}

impl Problem {
    /// A problem at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A validated pipeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Stable identifier: lowercase letters, digits, `-`, `_`, `.`; 1 to 64 characters,
    /// starting with a letter or digit.
    pub id: String,
    /// Human name; defaults to the id.
    pub name: String,
    /// Optional free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The ordered steps (at least one), with unique names.
    pub steps: Vec<StepDef>,
}

/// One step of a pipeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Unique within the pipeline: letters, digits, `-`, `_`; 1 to 64 characters.
    pub name: String,
    /// Queue whose workers run the step's job (default `default`): letters, digits, `-`,
    /// `_`, `.`; 1 to 64 characters.
    pub queue: String,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy of the step's job.
    pub retry: RetryPolicy,
    /// Park for a human after the step produces output (not allowed on the last step).
    #[serde(default)]
    pub requires_approval: bool,
    /// What the step does.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// The step kinds.
///
/// The file form names the kind with `kind = "…"`; every other key of the step belongs
/// either to the common options above or to the kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Run a program: `run = [argv…]`, optional `env` and `cwd`. `run`, `env` values and
    /// `cwd` may hold `{{ … }}` placeholders.
    Command {
        /// Program and arguments (at least the program).
        run: Vec<String>,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Working directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// Does nothing and succeeds with `output` (default `null`). Built in for tests and
    /// benchmarks of the engine itself.
    Noop {
        /// Output recorded for the step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    /// POST the step context as JSON to `url`: 2xx completes with the body as output, 202
    /// waits for a result posted to `POST /v1/jobs/{id}/result`, 4xx fails for good, 5xx,
    /// timeouts and network errors are retried. `url` and header values may hold
    /// placeholders.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Extra request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// How long a 202 may wait for its posted result before the attempt counts as
        /// timed out, in milliseconds (default [`DEFAULT_RESULT_TIMEOUT_MS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_timeout_ms: Option<u64>,
    },
    /// Waits in its queue until an external worker leases it over the API, heartbeats it and
    /// posts its result. The job's payload carries `params` and the step context.
    External {
        /// Free-form parameters for the external worker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<Value>,
    },
    /// A polling gate; see [`GateDef`].
    Gate(GateDef),
    /// Parks the execution until enough humans approve.
    Approval {
        /// Distinct approvals needed (at least 1).
        required_approvals: u32,
        /// Who may vote: token subjects, or `role:<role>` (that role or a higher one). Empty:
        /// anyone allowed to call the API as `user`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
    },
    /// A durable timer: waits `for_ms` from when the step starts, or until `until` (ms since
    /// the epoch). Exactly one of the two.
    Sleep {
        /// How long, in milliseconds (file form `for = "10m"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_ms: Option<u64>,
        /// Until this instant, ms since the epoch (file form: RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<crate::Millis>,
    },
}

/// How long an `http` step that answered 202 waits for its result by default: 1 hour.
pub const DEFAULT_RESULT_TIMEOUT_MS: u64 = 60 * 60 * 1000;

/// A polling gate: `probe` every `interval_ms` until it passes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDef {
    /// What answers pass, pending or fail.
    pub probe: Probe,
    /// Time between two probes that answered pending, in milliseconds.
    pub interval_ms: u64,
    /// Probes that may answer pending before `on_exhausted` decides.
    pub max_polls: u32,
    /// What happens when the poll budget is spent.
    pub on_exhausted: Exhaustion,
    /// With `on_exhausted = "pass"`: the gate passes only once this long has gone by since
    /// it started (it keeps probing until then), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_window_ms: Option<u64>,
    /// Runs when the probe answers fail, then the probe runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub helper: Option<Box<HelperDef>>,
    /// Most runs of the helper (default 1 when there is a helper).
    pub max_attempts: u32,
    /// Consecutive probes that may error (no verdict: crash, timeout, unreadable answer)
    /// before the gate fails with kind `timeout`.
    pub max_probe_errors: u32,
}

/// Default `max_probe_errors` of a gate.
pub const DEFAULT_MAX_PROBE_ERRORS: u32 = 3;

/// The probe of a gate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Probe {
    /// A program: exit 0 pass, exit 75 pending, anything else fail. Its summary is the
    /// `summary` of the JSON it writes to `$SLUICE_OUTPUT`, else the last line it printed.
    Command {
        /// Program and arguments; may hold placeholders.
        run: Vec<String>,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Working directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// An HTTP GET answering `{"verdict": "pass"|"pending"|"fail", "summary": …}`.
    Http {
        /// `http://` or `https://` URL; may hold placeholders.
        url: String,
        /// Extra request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
}

/// What a gate does when its poll budget is spent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Exhaustion {
    /// The execution fails with kind `timeout`.
    #[default]
    Fail,
    /// The gate passes once its watch window has gone by since it started; until then it
    /// keeps probing.
    Pass,
    /// The gate keeps probing without limit.
    Rearm,
}

/// The helper of a gate: a step of its own kind (`command`, `http`, `external` or `noop`)
/// with the common options of a step.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelperDef {
    /// Queue of the helper's job (default: the gate's queue).
    pub queue: String,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy of the helper's job.
    pub retry: RetryPolicy,
    /// What it does.
    #[serde(flatten)]
    pub kind: StepKind,
}

impl StepKind {
    /// The stable name of the kind, as written in files and used as the job kind.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Command { .. } => "command",
            StepKind::Noop { .. } => "noop",
            StepKind::Http { .. } => "http",
            StepKind::External { .. } => "external",
            StepKind::Gate(_) => "gate",
            StepKind::Approval { .. } => "approval",
            StepKind::Sleep { .. } => "sleep",
        }
    }

    /// Whether the step runs as a job (every kind but `approval`).
    pub fn has_job(&self) -> bool {
        !matches!(self, StepKind::Approval { .. })
    }
}

/// The kinds a gate's helper may be.
pub const HELPER_KINDS: &[&str] = &["command", "http", "external", "noop"];

/// Job kinds sluice's own workers run; jobs of any other kind wait for an external worker.
pub const BUILTIN_JOB_KINDS: &[&str] = &["command", "noop", "http", "gate", "sleep"];

/// Whether sluice's own workers run jobs of `kind` (see [`BUILTIN_JOB_KINDS`]).
pub fn is_builtin_job_kind(kind: &str) -> bool {
    BUILTIN_JOB_KINDS.contains(&kind)
}

/// Every step kind.
pub const KINDS: &[&str] = &["command", "noop", "http", "external", "gate", "approval", "sleep"];

/// Parses and validates a pipeline written in TOML.
///
/// # Errors
/// Every problem found, each naming its field.
pub fn parse_toml(text: &str) -> Result<Pipeline, Vec<Problem>> {
    from_value(&parse_text(text, false)?)
}

/// Parses and validates a pipeline written in JSON.
///
/// # Errors
/// Every problem found, each naming its field.
pub fn parse_json(text: &str) -> Result<Pipeline, Vec<Problem>> {
    from_value(&parse_text(text, true)?)
}

/// The value tree of a file's text, TOML (or JSON when `json`), not validated: for files
/// that carry more than a pipeline (`[[schedules]]` tables beside its steps).
///
/// # Errors
/// The text does not parse (one problem, for the whole document).
pub fn parse_text(text: &str, json: bool) -> Result<Value, Vec<Problem>> {
    if json {
        return serde_json::from_str(text).map_err(|e| vec![Problem::new("", format!("is not valid JSON: {e}"))]);
    }
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        vec![Problem::new("", format!("is not valid TOML{at}: {}", e.message()))]
    })?;
    Ok(toml_to_json(value))
}

/// Validates a pipeline given as a JSON value tree (file form or canonical form).
///
/// # Errors
/// Every problem found, each naming its field.
pub fn from_value(value: &Value) -> Result<Pipeline, Vec<Problem>> {
    crate::pipeline_validate::validate(value)
}

/// Converts a TOML value tree into the equivalent JSON tree (datetimes become strings).
pub fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

impl Pipeline {
    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::is_queue_name;

    #[test]
    fn queue_names_are_1_to_64_letters_digits_dots_underscores_or_dashes() {
        assert!(is_queue_name("Deploy.eu-1_a"));
        assert!(is_queue_name(&"q".repeat(64)));
        assert!(!is_queue_name(&"q".repeat(65)));
        assert!(!is_queue_name(""));
        assert!(!is_queue_name("a/b"));
        assert!(!is_queue_name("a b"));
        assert!(!is_queue_name("é"));
    }
}
