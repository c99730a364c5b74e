//! The OpenAPI 3.1 document of the API, generated from the code and served at
//! [`DOCUMENT_PATH`].
//!
//! Where each part comes from:
//! - operations: the `#[utoipa::path(...)]` attribute of each handler, registered together
//!   with its route in [`crate::routes`] (one `routes!(handler)` call feeds both the axum
//!   router and the document, so a route cannot be served undocumented or documented
//!   unserved);
//! - schemas: the types handlers serve (`ToSchema` on the views, on the records of
//!   `sluice-core` behind its `openapi` feature, and on documentation-only request structs
//!   beside the handlers that check bodies field by field);
//! - this module: the document's `info`, the `bearerAuth` security scheme, and the problem
//!   responses that whole classes of operations share, so handlers list only their own.
//!
//! Every error is an `application/problem+json` document of the one `Problem` schema
//! ([`crate::error::ProblemDocument`]); each code has its response type there
//! (`problem_responses!`).

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder, RefOr,
};
use utoipa::{ToResponse, ToSchema};

use crate::error::{
    BadRequest, Forbidden, Internal, PayloadTooLarge, ProblemDocument, StoreUnavailable,
    Unauthorized, UnsupportedMediaType,
};
use crate::routes::jobs::CommandPayload;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/v1/openapi.json";

/// The name of the security scheme of the `/v1` API.
pub const BEARER_AUTH: &str = "bearerAuth";

/// The document's description.
const DESCRIPTION: &str = "The sluice control API: pipelines, executions, jobs and queues, \
stored in Redis.\n\nEvery error is an `application/problem+json` document (RFC 9457) with a stable \
`code`; see the `Problem` schema. A path that no route matches answers 404 `NOT_FOUND`, a \
method a path does not have answers 405 `METHOD_NOT_ALLOWED` with an `Allow` header. Every \
`GET` operation also answers `HEAD`.";

/// The tags, in the order the document lists them.
const TAGS: &[(&str, &str)] = &[
    ("pipelines", "Pipeline definitions and their versions."),
    ("executions", "Runs of pipelines."),
    ("approvals", "Human decisions on steps waiting for approval."),
    ("jobs", "Standalone jobs and the jobs that run steps."),
    ("queues", "Queue figures, and pausing and resuming queues."),
    (
        "schedules",
        "Pipelines fired on a target at the times of a cron expression or an interval, once \
         per due time whatever the number of schedulers, with a history of every fire.",
    ),
    (
        "events",
        "What happened: the live event stream and an execution's own events.",
    ),
    (
        "workers",
        "External workers: lease the jobs sluice's own workers do not run, heartbeat them, \
         post their results (exactly once, by `Idempotency-Key`).",
    ),
    (
        "probes",
        "Liveness and readiness; open, for load balancers and supervisors.",
    ),
    (
        "metrics",
        "Prometheus metrics of the process and of the deployment; open, for scrapers.",
    ),
    ("openapi", "This document."),
];

/// The document's frame: `info`, tags, the security scheme, and schemas that operations
/// mention without referencing them. [`crate::routes::all`] merges the operations in.
pub(crate) fn base() -> OpenApi {
    let info = InfoBuilder::new()
        .title("sluice")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(
            LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "A token from the server's configuration, sent as `Authorization: Bearer <token>`.",
        ))
        .build();
    // Referenced from responses and descriptions, which do not collect schemas.
    let mut schemas = Vec::new();
    add_schema::<ProblemDocument>(&mut schemas);
    add_schema::<CommandPayload>(&mut schemas);
    // A gate's helper is itself a step kind, so the pipeline schema refers to it by name.
    add_schema::<sluice_core::pipeline::HelperDef>(&mut schemas);
    let components = ComponentsBuilder::new()
        .security_scheme(BEARER_AUTH, SecurityScheme::Http(bearer))
        .schemas_from_iter(schemas)
        .build();
    let tags = TAGS
        .iter()
        .map(|(name, description)| {
            TagBuilder::new()
                .name(*name)
                .description(Some(*description))
                .build()
        })
        .collect::<Vec<_>>();
    OpenApiBuilder::new()
        .info(info)
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

/// The schema timestamps get: `Millis` is a type alias of `i64`, which the derives
/// reference as the component `i64`; [`name_timestamps`] names it `Millis`.
const TIMESTAMP_SCHEMA: &str = "Millis";

/// Names the timestamp schema (see [`TIMESTAMP_SCHEMA`]) and says what it counts.
pub(crate) fn name_timestamps(api: &mut OpenApi) {
    let Some(components) = api.components.as_mut() else {
        return;
    };
    let Some(mut schema) = components.schemas.remove(&i64::name().into_owned()) else {
        return;
    };
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.description = Some("Milliseconds since the Unix epoch, UTC.".into());
    }
    let from = format!("#/components/schemas/{}", i64::name());
    let to = format!("#/components/schemas/{TIMESTAMP_SCHEMA}");
    for other in components.schemas.values_mut() {
        retarget(other, &from, &to);
    }
    components.schemas.insert(TIMESTAMP_SCHEMA.into(), schema);
}

/// Points every reference to `from` inside `schema` at `to`.
fn retarget(schema: &mut RefOr<Schema>, from: &str, to: &str) {
    match schema {
        RefOr::Ref(reference) if reference.ref_location == from => {
            reference.ref_location = to.to_string();
        }
        RefOr::Ref(_) => {}
        RefOr::T(Schema::Object(object)) => {
            for property in object.properties.values_mut() {
                retarget(property, from, to);
            }
            if let Some(extra) = object.additional_properties.as_deref_mut()
                && let AdditionalProperties::RefOr(extra) = extra
            {
                retarget(extra, from, to);
            }
        }
        RefOr::T(Schema::Array(array)) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                retarget(items, from, to);
            }
        }
        RefOr::T(Schema::OneOf(one_of)) => {
            one_of.items.iter_mut().for_each(|s| retarget(s, from, to));
        }
        RefOr::T(Schema::AllOf(all_of)) => {
            all_of.items.iter_mut().for_each(|s| retarget(s, from, to));
        }
        RefOr::T(Schema::AnyOf(any_of)) => {
            any_of.items.iter_mut().for_each(|s| retarget(s, from, to));
        }
        RefOr::T(_) => {}
    }
}

/// Adds `T`'s schema and the schemas it references.
fn add_schema<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The operations of a path item.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Every operation of a document.
fn all_operations_mut(api: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    api.paths.paths.values_mut().flat_map(operations_mut)
}

/// Adds the problem response `R` for `status` unless the operation documents that status
/// already (then with its own problem).
fn add_problem<R: for<'r> ToResponse<'r>>(operation: &mut Operation, status: u16) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| R::response().1);
}

/// Marks every operation of `api` as requiring the bearer token, and documents the
/// problems every operation behind the authentication layer and over the store can give
/// (401, 403, 500, 503). Applied to the `/v1` group, the group the authentication layer
/// wraps (every route of it needs at least the `user` or `worker` role, so a token of a
/// lower role is refused with 403).
pub(crate) fn protect(api: &mut OpenApi) {
    for operation in all_operations_mut(api) {
        operation.security = Some(vec![SecurityRequirement::new(
            BEARER_AUTH,
            Vec::<String>::new(),
        )]);
        add_problem::<Unauthorized>(operation, 401);
        add_problem::<Forbidden>(operation, 403);
        add_problem::<Internal>(operation, 500);
        add_problem::<StoreUnavailable>(operation, 503);
    }
}

/// Documents the problems of reading a request, for every operation that reads what
/// they concern: a JSON body (400, 413, 415) or path parameters (400).
pub(crate) fn add_request_problems(api: &mut OpenApi) {
    for operation in all_operations_mut(api) {
        if operation.request_body.is_some() {
            add_problem::<BadRequest>(operation, 400);
            add_problem::<PayloadTooLarge>(operation, 413);
            add_problem::<UnsupportedMediaType>(operation, 415);
        }
        let has_path_parameters = operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Path);
        if has_path_parameters {
            add_problem::<BadRequest>(operation, 400);
        }
    }
}

/// Get this document.
///
/// The OpenAPI 3.1 description of every route the server has, generated from its code.
/// Open: it needs no token.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "openapi", operation_id = "openapi.get",
    responses(
        (status = OK, description = "The OpenAPI document.", content_type = "application/json",
            body = Object),
    ),
)]
pub async fn document() -> Json<&'static OpenApi> {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    Json(DOCUMENT.get_or_init(crate::openapi))
}

/// `names` as a set, to compare with [`property_names`].
#[cfg(test)]
pub(crate) fn name_set(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

/// The names of the properties of `T`'s schema (an object).
#[cfg(test)]
pub(crate) fn property_names<T: utoipa::PartialSchema>() -> std::collections::BTreeSet<String> {
    let schema = serde_json::to_value(T::schema()).unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Every `$ref` in `value`.
    fn references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target.clone());
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_points_at_a_schema_of_the_document() {
        let document = serde_json::to_value(crate::openapi()).unwrap();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("`{target}` is not a component schema"));
            assert!(
                document["components"]["schemas"].get(name).is_some(),
                "`{target}` has no schema"
            );
        }
    }

    #[test]
    fn timestamps_are_named_millis() {
        let document = serde_json::to_value(crate::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        assert!(schemas.get("i64").is_none());
        assert_eq!(schemas[TIMESTAMP_SCHEMA]["type"], "integer");
        assert_eq!(
            schemas["Job"]["properties"]["created_at"]["$ref"],
            "#/components/schemas/Millis"
        );
    }

    #[test]
    fn the_v1_operations_require_the_token_and_the_open_ones_do_not() {
        let document = serde_json::to_value(crate::openapi()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics" | DOCUMENT_PATH);
                let expected = if open {
                    Value::Null
                } else {
                    json!([{ BEARER_AUTH: [] }])
                };
                assert_eq!(operation["security"], expected, "{method} {path}");
                for (status, code) in [("401", "UNAUTHORIZED"), ("403", "FORBIDDEN")] {
                    let response = &operation["responses"][status];
                    assert_eq!(response.is_null(), open, "{method} {path} {status}");
                    if !open {
                        let description = response["description"].as_str().unwrap();
                        assert!(description.starts_with(&format!("`{code}`")), "{description}");
                    }
                }
            }
        }
        assert_eq!(
            document["components"]["securitySchemes"][BEARER_AUTH],
            json!({"type": "http", "scheme": "bearer",
                   "description": "A token from the server's configuration, sent as `Authorization: Bearer <token>`."})
        );
    }
}
