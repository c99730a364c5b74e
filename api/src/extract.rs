//! Extractors whose rejections are [`ApiError`] problems instead of axum's plain-text ones.
//!
//! [`ApiJson`] wraps [`axum::Json`]: a missing or wrong `Content-Type` is 415, a body over
//! the limit ([`crate::BODY_LIMIT`], enforced by the router's `DefaultBodyLimit`) is 413,
//! syntactically invalid JSON is 400 with the line and column of the error, and JSON that
//! does not fit the target type is 422. Handlers take a [`serde_json::Value`] and check its
//! fields themselves (see [`crate::fields`]) so that every problem of a body is reported at
//! once, each naming its field.
//!
//! [`ApiPath`] and [`ApiQuery`] do the same for path parameters and query strings (400).

use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sluice_core::Problem;

use crate::error::ApiError;

/// A JSON request body, rejected with a problem document.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// Removes axum's fixed preamble (`Failed to parse the request body as JSON: `) from a
/// rejection's text, keeping serde's own message (which names the line and column).
fn cause(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

/// Maps axum's JSON rejections to problems.
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
            "the request body is not valid JSON: {}",
            cause(&e.body_text())
        )),
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = cause(&text);
            // serde_path_to_error writes `path: message`; the path is the field.
            let (field, message) = match detail.split_once(": ") {
                Some((path, message)) if !path.contains(' ') => (path, message),
                _ => ("", detail),
            };
            ApiError::Validation {
                problems: vec![Problem::new(field, message)],
            }
        }
        JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(
            FailedToBufferBody::LengthLimitError(_),
        )) => ApiError::PayloadTooLarge {
            limit: crate::BODY_LIMIT,
        },
        JsonRejection::BytesRejection(_) => {
            ApiError::BadRequest("the request body could not be read".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// An optional JSON object body: an empty body reads as `{}` (so `curl -X POST` works for
/// actions whose fields are all optional); anything else is read as [`ApiJson`] reads it.
#[derive(Debug, Clone)]
pub struct ApiOptionalJson(pub serde_json::Value);

impl<S> FromRequest<S> for ApiOptionalJson
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, crate::BODY_LIMIT)
            .await
            .map_err(|_| ApiError::PayloadTooLarge { limit: crate::BODY_LIMIT })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiOptionalJson(serde_json::Value::Object(serde_json::Map::new())));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let ApiJson(value) = ApiJson::<serde_json::Value>::from_request(req, state).await?;
        Ok(ApiOptionalJson(value))
    }
}

/// Path parameters, rejected with a problem document.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the request path is invalid: {}",
                cause(&rejection.body_text())
            ))),
        }
    }
}

/// A query string, rejected with a problem document.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the query string is invalid: {}",
                cause(&rejection.body_text())
            ))),
        }
    }
}
