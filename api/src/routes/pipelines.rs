//! `PUT /v1/pipelines/{id}`, `GET /v1/pipelines`, `GET /v1/pipelines/{id}`.
//!
//! Apply takes the pipeline in its JSON file form (durations as `"10s"`; the canonical form
//! with `timeout_ms` is accepted too), validates all of it with
//! [`sluice_core::pipeline::from_value`] and stores a new version only when the canonical
//! form changed. The body's `id` must equal the path's; when the body has none, the path's
//! is used.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sluice_core::pipeline::{self, Exhaustion, HELPER_KINDS, KINDS};
use sluice_core::{Backoff, Problem};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::AppState;
use crate::error::{ApiError, PipelineInvalid, PipelineNotFound, quote};
use crate::extract::{ApiJson, ApiPath};
use crate::fields::kind_of;
use crate::views::{PipelineApplied, PipelineList, PipelineSummary, PipelineView};

// Documentation only, like `StepDocument` and `RetryDocument`: `pipeline::from_value` reads
// the body; a test checks that these fields are the ones it accepts.
/// A pipeline document as `PUT /v1/pipelines/{id}` takes it: the file form, with durations
/// written like `30s` (the canonical form the API answers with is accepted too). Every
/// problem of a document is reported at once.
#[derive(ToSchema)]
#[schema(as = PipelineDocument, example = json!({
    "name": "Release",
    "steps": [
        {"name": "build", "kind": "command", "run": ["make", "build"], "timeout": "10m"},
        {"name": "deploy", "kind": "command", "run": ["./deploy", "{{ steps.build.output.url }}"],
         "retry": {"max_attempts": 5, "backoff": "exponential", "initial": "2s", "max": "1m"}}
    ]
}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct PipelineDocument {
    /// Lowercase letters, digits, `-`, `_`, `.`; 1 to 64 characters, starting with a
    /// letter or digit. Must equal the path's id; defaults to it.
    #[schema(required = false)]
    id: String,
    /// Human name (at most 200 characters); defaults to the id.
    #[schema(required = false)]
    name: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// The ordered steps (1 to 256), with unique names.
    #[schema(min_items = 1, max_items = 256)]
    steps: Vec<StepDocument>,
}

/// One step of a pipeline document. The common fields apply to every kind but `approval`,
/// which runs no job and takes only `name`, `kind` and its own fields; each other field
/// belongs to the kind its description names. `run`, `env` values, `cwd`, `url` and header
/// values may hold `{{ … }}` placeholders naming the input, the execution or earlier steps.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct StepDocument {
    /// Unique within the pipeline: letters, digits, `-`, `_`; 1 to 64 characters.
    name: String,
    /// What the step does.
    #[schema(schema_with = step_kind_schema)]
    kind: String,
    /// Queue whose workers run the step's job: letters, digits, `-`, `_`, `.`; 1 to 64
    /// characters. Default `default`.
    #[schema(required = false)]
    queue: String,
    /// Time limit of one attempt, as a duration such as `30s`, `5m` or `1h30m`.
    #[schema(required = false, example = "10m")]
    timeout: String,
    /// Time limit of one attempt in milliseconds (the canonical form of `timeout`; give
    /// one of the two).
    #[schema(required = false, minimum = 1)]
    timeout_ms: u64,
    /// Retry policy of the step's job.
    #[schema(required = false)]
    retry: RetryDocument,
    /// Park for a human after the step produces output (not on the last step).
    #[schema(required = false)]
    requires_approval: bool,
    /// `command`: the program and its arguments (at least the program).
    #[schema(required = false, min_items = 1)]
    run: Vec<String>,
    /// `command`: extra environment variables (names starting with `SLUICE_` are reserved).
    #[schema(required = false)]
    env: BTreeMap<String, String>,
    /// `command`: the working directory.
    #[schema(required = false)]
    cwd: String,
    /// `noop`: the output recorded for the step (default `null`).
    #[schema(required = false)]
    output: Value,
    /// `http` (required): the `http://` or `https://` URL the step context is POSTed to.
    #[schema(required = false, example = "http://deployer.internal/deploy")]
    url: String,
    /// `http`: extra request headers.
    #[schema(required = false)]
    headers: BTreeMap<String, String>,
    /// `http`: how long an answer 202 waits for its result to be posted (default `1h`).
    #[schema(required = false, example = "1h")]
    result_timeout: String,
    /// `http`: `result_timeout` in milliseconds.
    #[schema(required = false, minimum = 1)]
    result_timeout_ms: u64,
    /// `external`: free-form parameters handed to the external worker.
    #[schema(required = false)]
    params: Value,
    /// `gate` (required): what answers pass, pending or fail.
    #[schema(required = false)]
    probe: ProbeDocument,
    /// `gate` (required): time between two probes that answered pending; at least `1s`.
    #[schema(required = false, example = "30s")]
    interval: String,
    /// `gate`: `interval` in milliseconds.
    #[schema(required = false, minimum = 1000)]
    interval_ms: u64,
    /// `gate` (required): probes that may answer pending before `on_exhausted` decides.
    #[schema(required = false, minimum = 1, maximum = 100000)]
    max_polls: u32,
    /// `gate`: what happens when the poll budget is spent (default `fail`).
    #[schema(required = false)]
    on_exhausted: Exhaustion,
    /// `gate`, with `on_exhausted = "pass"` only: the gate passes once this long has gone by
    /// since it started, and keeps probing until then.
    #[schema(required = false, example = "30m")]
    watch_window: String,
    /// `gate`: `watch_window` in milliseconds.
    #[schema(required = false, minimum = 1)]
    watch_window_ms: u64,
    /// `gate`: a step run when the probe answers fail, after which the probe runs again.
    #[schema(required = false)]
    helper: HelperDocument,
    /// `gate`, with a `helper` only: most runs of the helper (default 1).
    #[schema(required = false, minimum = 1, maximum = 100)]
    max_attempts: u32,
    /// `gate`: consecutive probes that may error before the gate fails (default 3).
    #[schema(required = false, minimum = 1, maximum = 100)]
    max_probe_errors: u32,
    /// `approval`: distinct approvals needed (default 1).
    #[schema(required = false, minimum = 1, maximum = 100)]
    required_approvals: u32,
    /// `approval`: who may vote: token subjects, or `role:admin`, `role:user`,
    /// `role:worker` (that role or a higher one). Default: anyone allowed to call the API
    /// as `user`.
    #[schema(required = false)]
    approvers: Vec<String>,
    /// `sleep`: how long to wait from when the step starts (give `for` or `until`).
    #[schema(required = false, example = "15m")]
    r#for: String,
    /// `sleep`: `for` in milliseconds.
    #[schema(required = false, minimum = 1)]
    for_ms: u64,
    /// `sleep`: the instant to wait for: RFC 3339 text, or milliseconds since the epoch
    /// (the canonical form).
    #[schema(required = false, schema_with = until_schema)]
    until: String,
}

/// The probe of a gate. Its schema is [`StepDocument`]'s, cut to the fields of a probe.
pub(crate) struct ProbeDocument;

impl PartialSchema for ProbeDocument {
    fn schema() -> RefOr<Schema> {
        let description = "What a gate polls: `run` (a command: exit 0 pass, 75 pending, \
                           anything else fail) or `url` (an HTTP GET answering \
                           `{\"verdict\": \"pass\"|\"pending\"|\"fail\", \"summary\": …}`).";
        let fields = [
            ("run", "The program and its arguments."),
            ("env", "With `run`: extra environment variables."),
            ("cwd", "With `run`: the working directory."),
            ("url", "The `http://` or `https://` URL to GET."),
            ("headers", "With `url`: extra request headers."),
        ];
        step_fields(description, &fields).into()
    }
}

impl ToSchema for ProbeDocument {}

/// The helper of a gate. Its schema is [`StepDocument`]'s, cut to the fields of a helper.
pub(crate) struct HelperDocument;

impl PartialSchema for HelperDocument {
    fn schema() -> RefOr<Schema> {
        let description = "A step without a name, run when the gate's probe answers fail, \
                           with the fields of its kind as in a step.";
        // An empty description keeps the step's.
        let fields = [
            (
                "queue",
                "Queue of the helper's job; default: the gate's queue.",
            ),
            ("timeout", ""),
            ("timeout_ms", ""),
            ("retry", ""),
            ("run", ""),
            ("env", ""),
            ("cwd", ""),
            ("output", ""),
            ("url", ""),
            ("headers", ""),
            ("result_timeout", ""),
            ("result_timeout_ms", ""),
            ("params", ""),
        ];
        let mut helper = step_fields(description, &fields);
        helper
            .properties
            .insert("kind".into(), helper_kind_schema().into());
        helper.required.push("kind".into());
        helper.into()
    }
}

impl ToSchema for HelperDocument {}

/// An object schema of the properties of [`StepDocument`] named in `fields`, each with the
/// description given beside it (the step's own when that is empty).
fn step_fields(description: &str, fields: &[(&str, &str)]) -> Object {
    let mut object = ObjectBuilder::new().description(Some(description)).build();
    let RefOr::T(Schema::Object(step)) = StepDocument::schema() else {
        return object;
    };
    for (name, mut property) in step.properties {
        let Some(&(_, own)) = fields.iter().find(|(field, _)| *field == name) else {
            continue;
        };
        if let RefOr::T(Schema::Object(property)) = &mut property
            && !own.is_empty()
        {
            property.description = Some(own.into());
        }
        object.properties.insert(name, property);
    }
    object
}

/// A retry policy in a pipeline document. Durations are written like `30s`; the
/// canonical `…_ms` fields are accepted instead.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct RetryDocument {
    /// Attempts in total, including the first (1 to 100; default 3).
    #[schema(required = false, minimum = 1, maximum = 100)]
    max_attempts: u32,
    /// Growth of the delay between attempts (default `exponential`).
    #[schema(required = false)]
    backoff: Backoff,
    /// Delay after the first failed attempt (default `1s`).
    #[schema(required = false, example = "1s")]
    initial: String,
    /// `initial` in milliseconds.
    #[schema(required = false)]
    initial_ms: u64,
    /// Upper bound of any delay (default `1m`).
    #[schema(required = false, example = "1m")]
    max: String,
    /// `max` in milliseconds.
    #[schema(required = false)]
    max_ms: u64,
    /// Spread delays by ±20 % (default `true`).
    #[schema(required = false)]
    jitter: bool,
}

/// The schema of a step's `kind`: one of the step kinds.
fn step_kind_schema() -> Object {
    kind_schema(KINDS)
}

/// The schema of a helper's `kind`: one of the kinds a gate's helper may be.
fn helper_kind_schema() -> Object {
    kind_schema(HELPER_KINDS)
}

fn kind_schema(kinds: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(kinds.iter().copied()))
        .build()
}

/// The schema of a sleep's `until`: RFC 3339 text, or milliseconds since the epoch.
fn until_schema() -> Schema {
    let format = |known| Some(SchemaFormat::KnownFormat(known));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(format(KnownFormat::DateTime)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(format(KnownFormat::Int64)),
            )
            .build(),
    )
}

/// Checks the body against the path id and validates it; every problem is collected.
pub(crate) fn validate(path_id: &str, mut body: Value) -> Result<sluice_core::Pipeline, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(map) = body.as_object_mut() else {
        return Err(vec![Problem::new(
            "",
            format!("the pipeline must be a JSON object, not {}", kind_of(&body)),
        )]);
    };
    match map.get("id") {
        None | Some(Value::Null) => {
            map.insert("id".into(), Value::String(path_id.to_string()));
        }
        Some(Value::String(given)) if given != path_id => problems.push(Problem::new(
            "id",
            format!(
                "is `{}` but the path names `{}`; they must be equal (or leave `id` out)",
                quote(given),
                quote(path_id)
            ),
        )),
        // Equal, or not a string (the validator reports that).
        Some(_) => {}
    }
    match pipeline::from_value(&body) {
        Ok(p) if problems.is_empty() => Ok(p),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Apply a pipeline.
///
/// Validates the whole document and stores a new version only when its canonical form
/// changed. Answers 201 for a new pipeline, 200 otherwise, with the canonical form.
#[utoipa::path(
    put, path = "/v1/pipelines/{id}", tag = "pipelines", operation_id = "pipelines.apply",
    params(("id" = String, Path, description = "The pipeline id.")),
    request_body = PipelineDocument,
    responses(
        (status = CREATED, description = "A new pipeline (version 1).", body = PipelineApplied,
            headers(("Location" = String, description = "`/v1/pipelines/{id}`"))),
        (status = OK, description = "An existing pipeline: a new version when `changed`.",
            body = PipelineApplied),
        (status = UNPROCESSABLE_ENTITY, response = inline(PipelineInvalid)),
    ),
)]
pub async fn apply(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let pipeline =
        validate(&id, body).map_err(|problems| ApiError::PipelineInvalid { problems })?;
    let (version, changed) = state
        .engine
        .store()
        .put_pipeline(&pipeline, state.engine.now())
        .await?;
    if changed {
        tracing::info!(pipeline.id = %pipeline.id, pipeline.version = version, "pipeline applied");
    }
    let body = PipelineApplied {
        id: pipeline.id.clone(),
        version,
        changed,
        pipeline,
    };
    if version == 1 && changed {
        let location = format!("/v1/pipelines/{}", body.id);
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response())
    } else {
        Ok(Json(body).into_response())
    }
}

/// List pipelines.
///
/// One line per pipeline (its current version), sorted by id.
#[utoipa::path(
    get, path = "/v1/pipelines", tag = "pipelines", operation_id = "pipelines.list",
    responses(
        (status = OK, description = "Every pipeline.", body = PipelineList),
    ),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<PipelineList>, ApiError> {
    let stored = state.engine.store().list_pipelines().await?;
    let items = stored.iter().map(PipelineSummary::from).collect();
    Ok(Json(PipelineList { items }))
}

/// Get a pipeline.
///
/// Its current version, in canonical form, with its timestamps.
#[utoipa::path(
    get, path = "/v1/pipelines/{id}", tag = "pipelines", operation_id = "pipelines.get",
    params(("id" = String, Path, description = "The pipeline id.")),
    responses(
        (status = OK, description = "The pipeline.", body = PipelineView),
        (status = NOT_FOUND, response = inline(PipelineNotFound)),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PipelineView>, ApiError> {
    match state.engine.store().get_pipeline(&id).await? {
        Some(stored) => Ok(Json(PipelineView::from(stored))),
        None => Err(ApiError::PipelineNotFound { id: quote(&id) }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::openapi::property_names;

    fn body() -> Value {
        json!({"steps": [{"name": "a", "kind": "noop"}]})
    }

    #[test]
    fn the_path_id_is_used_when_the_body_has_none() {
        assert_eq!(validate("p1", body()).unwrap().id, "p1");
    }

    #[test]
    fn a_body_id_that_differs_from_the_path_is_a_problem_beside_the_others() {
        let mut b = body();
        b["id"] = json!("other");
        b["steps"][0]["colour"] = json!("blue");
        let problems = validate("p1", b).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["id", "steps[0].colour"]);
        assert!(problems[0].message.contains("the path names `p1`"));
    }

    #[test]
    fn a_non_object_body_is_one_problem() {
        let problems = validate("p1", json!([1])).unwrap_err();
        assert_eq!(
            problems,
            [Problem::new(
                "",
                "the pipeline must be a JSON object, not an array"
            )]
        );
    }

    /// The fields the validator lists when it meets an unknown one in `document` (the
    /// probe field `zz` at `at`).
    fn listed_fields(document: Value, at: &str) -> BTreeSet<String> {
        let problems = pipeline::from_value(&document).unwrap_err();
        let problem = problems
            .iter()
            .find(|p| p.field == at)
            .unwrap_or_else(|| panic!("no problem at {at}: {problems:?}"));
        let listed = problem
            .message
            .strip_prefix("unknown field; expected one of ")
            .unwrap_or_else(|| panic!("{}", problem.message));
        listed.split(", ").map(str::to_string).collect()
    }

    fn names(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn the_documented_pipeline_fields_are_the_ones_the_validator_accepts() {
        let step = json!({"name": "a", "kind": "noop"});
        let top = listed_fields(json!({"id": "p", "steps": [step], "zz": 1}), "zz");
        assert_eq!(property_names::<PipelineDocument>(), top);

        // The validator lists the file-form fields of each kind; it also accepts the
        // canonical form's `…_ms` twins, which the documents list too.
        let of_step =
            |step: Value, at: &str| listed_fields(json!({"id": "p", "steps": [step]}), at);
        let mut step_fields = BTreeSet::new();
        for kind in KINDS {
            let step = json!({"name": "a", "kind": kind, "zz": 1});
            step_fields.extend(of_step(step, "steps[0].zz"));
        }
        step_fields.extend(names(&[
            "timeout_ms",
            "result_timeout_ms",
            "interval_ms",
            "watch_window_ms",
            "for_ms",
        ]));
        assert_eq!(property_names::<StepDocument>(), step_fields);

        let mut helper_fields = BTreeSet::new();
        for kind in HELPER_KINDS {
            let step = json!({"name": "a", "kind": "gate", "helper": {"kind": kind, "zz": 1}});
            helper_fields.extend(of_step(step, "steps[0].helper.zz"));
        }
        helper_fields.extend(names(&["timeout_ms", "result_timeout_ms"]));
        assert_eq!(property_names::<HelperDocument>(), helper_fields);

        let mut probe_fields = BTreeSet::new();
        for probe in [
            json!({"run": ["x"], "zz": 1}),
            json!({"url": "http://x", "zz": 1}),
        ] {
            let step = json!({"name": "a", "kind": "gate", "probe": probe});
            probe_fields.extend(of_step(step, "steps[0].probe.zz"));
        }
        assert_eq!(property_names::<ProbeDocument>(), probe_fields);

        let retry = json!({"name": "a", "kind": "noop", "retry": {"zz": 1}});
        let mut retry_fields = of_step(retry, "steps[0].retry.zz");
        retry_fields.extend(names(&["initial_ms", "max_ms"]));
        assert_eq!(property_names::<RetryDocument>(), retry_fields);

        // The twins are accepted indeed.
        let canonical = json!({"id": "p", "steps": [
            {"name": "a", "kind": "noop", "timeout_ms": 1000,
             "retry": {"initial_ms": 1000, "max_ms": 2000}},
            {"name": "b", "kind": "http", "url": "http://x", "result_timeout_ms": 1000},
            {"name": "c", "kind": "gate", "probe": {"url": "http://x"}, "interval_ms": 1000,
             "max_polls": 1, "on_exhausted": "pass", "watch_window_ms": 1000,
             "helper": {"kind": "http", "url": "http://x", "timeout_ms": 1,
                        "result_timeout_ms": 1}},
            {"name": "d", "kind": "sleep", "for_ms": 1000},
        ]});
        pipeline::from_value(&canonical).unwrap();
    }

    #[test]
    fn the_documented_kinds_are_the_ones_the_validator_reads() {
        let kinds = |schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>| {
            serde_json::to_value(schema).unwrap()["properties"]["kind"]["enum"].clone()
        };
        let step = <StepDocument as utoipa::PartialSchema>::schema();
        assert_eq!(kinds(step), json!(KINDS));
        let helper = <HelperDocument as utoipa::PartialSchema>::schema();
        assert_eq!(kinds(helper), json!(HELPER_KINDS));
    }

    #[test]
    fn until_is_documented_in_both_of_its_forms() {
        let schema = serde_json::to_value(<StepDocument as utoipa::PartialSchema>::schema());
        let forms = &schema.unwrap()["properties"]["until"]["oneOf"];
        assert_eq!(forms[0]["format"], "date-time");
        assert_eq!(forms[1]["type"], "integer");
        for until in [json!("2026-12-01T10:00:00Z"), json!(1_796_119_200_000_i64)] {
            let step = json!({"name": "a", "kind": "sleep", "until": until});
            pipeline::from_value(&json!({"id": "p", "steps": [step]})).unwrap();
        }
    }
}
