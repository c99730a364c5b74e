//! Who is calling: the subject recorded in the audit entries of operator actions.
//!
//! The authentication layer puts a [`Caller`] into the request's extensions; without one
//! (authentication off) the caller is `anonymous`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The subject of the caller's token.
    pub subject: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_else(|| Caller { subject: "anonymous".into() }))
    }
}
