//! Who may call what: bearer tokens, roles, and the one table of the access policy.
//!
//! Every `/v1` route sits behind [`protect`], one `route_layer` middleware that:
//! 1. finds the route template axum matched ([`MatchedPath`], e.g.
//!    `/v1/executions/{id}/retry`) and looks up the access it needs in [`POLICY`];
//! 2. reads `Authorization: Bearer <secret>` and finds the configured token it belongs to;
//! 3. answers 401 `UNAUTHORIZED` (with `WWW-Authenticate: Bearer realm="sluice"`) when the
//!    token is missing or unknown, 403 `FORBIDDEN` when the token's role is too low, and
//!    otherwise hands the request on with the [`Caller`] in its extensions, where handlers
//!    read it with the [`Caller`] extractor (the actor of operator actions).
//!
//! Roles are ordered, each with the rights of the ones below it: `worker` (the external-worker
//! operations: lease, heartbeat, post result) < `user` (everything but the operator actions)
//! < `admin` (everything). A route needs either nothing ([`Access::Open`]) or a least role
//! ([`Access::AtLeast`]).
//!
//! Invariants:
//! - the policy is this file's [`POLICY`] table and nothing else; it lists routes that are not
//!   served yet, so a route is covered the day it is added;
//! - fail closed: a `/v1` route missing from the table needs `admin` (and a warning is logged
//!   once per route);
//! - secrets are compared as SHA-256 digests with [`subtle::ConstantTimeEq`], against every
//!   configured token without stopping at a match, so the time taken says nothing about how
//!   much of a secret was right or which token matched;
//! - a secret is never logged, echoed in a problem, or shown by `Debug` ([`Secret`]);
//! - with authentication disabled ([`Auth::disabled`]) every caller is
//!   `{subject: "anonymous", role: admin}`; the binary only allows that on a loopback address.
//!
//! `/healthz`, `/readyz` and `/metrics` are outside the `/v1` router and never ask for a token.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::ApiError;

/// The realm of the `WWW-Authenticate` challenge sent with every 401.
pub const REALM: &str = "sluice";

/// The subject of every caller while authentication is disabled.
pub const ANONYMOUS: &str = "anonymous";

/// What a token may do. Ordered: each role has the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// An external worker: lease jobs, heartbeat them, post their results.
    Worker,
    /// Everything but the operator actions.
    User,
    /// Everything, including the operator actions (cancel, retry, restart an execution;
    /// pause and resume a queue).
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Worker, Role::User, Role::Admin];

    /// The stable name (`admin`, `user`, `worker`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `admin`, `user`, `worker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role \"{0}\"; expected admin, user or worker")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(sluice_core::describe::quote(name, 40)))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (probes, the API description).
    Open,
    /// A valid token whose role is this one or higher.
    AtLeast(Role),
}

impl Access {
    /// Whether a caller with `role` may pass.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Open => true,
            Access::AtLeast(least) => role >= least,
        }
    }
}

/// One line of the access policy.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The HTTP method (`HEAD` is looked up as `GET`, as axum routes it).
    pub method: Method,
    /// The route template as axum matches it (`/v1/executions/{id}/retry`).
    pub route: &'static str,
    /// What it needs.
    pub access: Access,
}

const fn rule(method: Method, route: &'static str, access: Access) -> Rule {
    Rule {
        method,
        route,
        access,
    }
}

const OPEN: Access = Access::Open;
const WORKER: Access = Access::AtLeast(Role::Worker);
const USER: Access = Access::AtLeast(Role::User);
const ADMIN: Access = Access::AtLeast(Role::Admin);

/// The access policy of the `/v1` API: one rule per (method, route template), including
/// routes that are not served yet. A served route missing here needs `admin`.
///
/// `docs/API.md` ("Authentication and roles") shows the same table; a test keeps them equal.
pub const POLICY: &[Rule] = &[
    // The API description, like the probes, is open.
    rule(Method::GET, "/v1/openapi.json", OPEN),
    // Pipelines.
    rule(Method::GET, "/v1/pipelines", USER),
    rule(Method::GET, "/v1/pipelines/{id}", USER),
    rule(Method::PUT, "/v1/pipelines/{id}", USER),
    // Executions.
    rule(Method::POST, "/v1/executions", USER),
    rule(Method::GET, "/v1/executions", USER),
    rule(Method::GET, "/v1/executions/{id}", USER),
    rule(Method::GET, "/v1/executions/{id}/events", USER),
    rule(Method::POST, "/v1/executions/{id}/pause", USER),
    rule(Method::POST, "/v1/executions/{id}/resume", USER),
    rule(Method::POST, "/v1/executions/{id}/cancel", ADMIN),
    rule(Method::POST, "/v1/executions/{id}/retry", ADMIN),
    rule(Method::POST, "/v1/executions/{id}/restart", ADMIN),
    // Approvals.
    rule(
        Method::POST,
        "/v1/executions/{id}/steps/{step}/approve",
        USER,
    ),
    rule(
        Method::POST,
        "/v1/executions/{id}/steps/{step}/reject",
        USER,
    ),
    rule(
        Method::POST,
        "/v1/executions/{id}/steps/{step}/request-changes",
        USER,
    ),
    // Jobs.
    rule(Method::POST, "/v1/jobs", USER),
    rule(Method::GET, "/v1/jobs/{id}", USER),
    rule(Method::POST, "/v1/jobs/{id}/cancel", USER),
    // Queues.
    rule(Method::GET, "/v1/queues", USER),
    rule(Method::GET, "/v1/queues/{q}", USER),
    rule(Method::POST, "/v1/queues/{q}/pause", ADMIN),
    rule(Method::POST, "/v1/queues/{q}/resume", ADMIN),
    // External workers.
    rule(Method::POST, "/v1/queues/{q}/lease", WORKER),
    rule(Method::POST, "/v1/jobs/{id}/heartbeat", WORKER),
    rule(Method::POST, "/v1/jobs/{id}/result", WORKER),
    // Schedules.
    rule(Method::POST, "/v1/schedules", USER),
    rule(Method::GET, "/v1/schedules", USER),
    rule(Method::GET, "/v1/schedules/{id}", USER),
    rule(Method::PATCH, "/v1/schedules/{id}", USER),
    rule(Method::DELETE, "/v1/schedules/{id}", USER),
    rule(Method::POST, "/v1/schedules/{id}/run-now", USER),
    rule(Method::GET, "/v1/schedules/{id}/runs", USER),
    // Events.
    rule(Method::GET, "/v1/events", USER),
];

/// The rule for `method route`, if the table has one (`HEAD` is looked up as `GET`).
pub fn rule_for(method: &Method, route: &str) -> Option<&'static Rule> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    POLICY
        .iter()
        .find(|rule| rule.method == method && rule.route == route)
}

/// What `method route` needs: its rule's access, or `admin` when the table has no rule
/// (fail closed; a warning is logged the first time each route is seen).
pub fn required_access(method: &Method, route: &str) -> Access {
    if let Some(rule) = rule_for(method, route) {
        return rule.access;
    }
    // Keyed by the template alone: only served routes reach the layer, so the set is bounded.
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = WARNED
        .lock()
        .map(|mut warned| warned.insert(route.to_string()))
        .unwrap_or(false);
    if first {
        tracing::warn!(
            http.method = %method,
            http.route = route,
            "route missing from the access policy; only admin tokens may call it"
        );
    }
    ADMIN
}

/// A secret: compared, never shown. `Debug` prints `Secret(<redacted>)`; there is no
/// `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for checking and hashing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One configured token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Who holds it (logged, and recorded as the actor of operator actions).
    pub subject: String,
    /// What it may do.
    pub role: Role,
    /// The secret sent as `Authorization: Bearer <secret>`.
    pub secret: Secret,
}

/// Who is calling: the subject and role of the token presented, or `anonymous` with role
/// `admin` while authentication is disabled.
///
/// The authentication layer puts it in the request's extensions; a handler takes it as an
/// extractor argument. Outside the `/v1` router (where no layer put it there) extracting it
/// is a bug and answers 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject.
    pub subject: String,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// The caller while authentication is disabled.
    pub fn anonymous() -> Self {
        Self {
            subject: ANONYMOUS.into(),
            role: Role::Admin,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(format!(
                "no caller for {} {}: the route is not behind the authentication layer",
                parts.method,
                parts.uri.path()
            ))
        })
    }
}

/// A configured token as kept in memory: the digest of its secret, not the secret.
struct Known {
    digest: [u8; 32],
    caller: Caller,
}

enum Mode {
    Disabled,
    Tokens(Vec<Known>),
}

/// The authentication settings of the API. Cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Mode>);

impl Auth {
    /// No authentication: every caller is [`Caller::anonymous`]. Only for an API that
    /// listens on a loopback address.
    pub fn disabled() -> Self {
        Self(Arc::new(Mode::Disabled))
    }

    /// Bearer tokens. The configuration refuses empty and repeated secrets; should two
    /// tokens share a secret anyway, the first one listed is the caller. With no tokens every
    /// `/v1` request that needs a role is refused.
    pub fn tokens(tokens: impl IntoIterator<Item = Token>) -> Self {
        let known = tokens
            .into_iter()
            .map(|token| Known {
                digest: digest(token.secret.expose()),
                caller: Caller {
                    subject: token.subject,
                    role: token.role,
                },
            })
            .collect();
        Self(Arc::new(Mode::Tokens(known)))
    }

    /// Whether requests must carry a token.
    pub fn is_enabled(&self) -> bool {
        matches!(*self.0, Mode::Tokens(_))
    }

    /// Who sent `authorization` (the `Authorization` header, if any).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`]: no bearer token, or one that matches no configured token.
    pub fn identify(&self, authorization: Option<&HeaderValue>) -> Result<Caller, ApiError> {
        let known = match &*self.0 {
            Mode::Disabled => return Ok(Caller::anonymous()),
            Mode::Tokens(known) => known,
        };
        let Some(header) = authorization else {
            return Err(ApiError::Unauthorized(
                "a bearer token is required: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let presented = bearer(header).ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
        let presented = digest(presented);
        // Every token is compared, in constant time; the index of the first match is
        // selected without branching on the comparison.
        let mut matched = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, token) in (0u32..).zip(known) {
            let hit = presented.ct_eq(&token.digest);
            index.conditional_assign(&i, hit & !matched);
            matched |= hit;
        }
        if bool::from(matched) {
            let token = usize::try_from(index).ok().and_then(|i| known.get(i));
            if let Some(token) = token {
                return Ok(token.caller.clone());
            }
        }
        Err(ApiError::Unauthorized(
            "the bearer token is not valid".into(),
        ))
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Mode::Disabled => f.write_str("Auth::Disabled"),
            Mode::Tokens(known) => f
                .debug_struct("Auth")
                .field(
                    "tokens",
                    &known.iter().map(|k| &k.caller).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// Whether `caller` may call `method route`.
///
/// # Errors
/// [`ApiError::Forbidden`], naming the caller's role and the role needed.
pub fn authorize(caller: &Caller, method: &Method, route: &str) -> Result<(), ApiError> {
    match required_access(method, route) {
        Access::AtLeast(needed) if caller.role < needed => Err(ApiError::Forbidden {
            subject: caller.subject.clone(),
            role: caller.role,
            needed,
            operation: format!("{method} {route}"),
        }),
        _ => Ok(()),
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive).
fn bearer(header: &HeaderValue) -> Option<&str> {
    let text = header.to_str().ok()?;
    let (scheme, credentials) = text.trim().split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// `router` with every route behind the authentication layer (a `route_layer`: requests
/// that match no route are not authenticated, they get the router's 404).
///
/// Call it after adding the routes. The `/v1` router adds its 405 fallback afterwards, so a
/// wrong method on a known path is answered 405 by the router, not by this layer.
pub fn protect<S>(router: Router<S>, auth: Auth) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(middleware::from_fn_with_state(auth, authenticate))
}

/// The middleware of [`protect`].
async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    // A route layer always sees the matched route; without one, fail closed.
    let route = route.as_deref().unwrap_or("(unmatched)");
    let method = request.method().clone();
    if required_access(&method, route) == Access::Open {
        return next.run(request).await;
    }
    let caller = match auth.identify(request.headers().get(header::AUTHORIZATION)) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::info!(http.method = %method, http.route = route, "request refused: {e}");
            return e.into_response();
        }
    };
    if let Err(e) = authorize(&caller, &method, route) {
        tracing::info!(
            http.method = %method,
            http.route = route,
            auth.subject = %caller.subject,
            auth.role = %caller.role,
            "request refused: {e}"
        );
        return e.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn auth() -> Auth {
        Auth::tokens([
            Token {
                subject: "ada".into(),
                role: Role::Admin,
                secret: Secret::new("admin-secret-0123456789"),
            },
            Token {
                subject: "uma".into(),
                role: Role::User,
                secret: Secret::new("user-secret-0123456789"),
            },
            Token {
                subject: "wes".into(),
                role: Role::Worker,
                secret: Secret::new("worker-secret-0123456789"),
            },
        ])
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn roles_parse_from_their_names_and_nothing_else() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role \"root\"; expected admin, user or worker"
        );
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn each_role_has_the_rights_of_the_ones_below() {
        assert!(USER.allows(Role::Admin) && USER.allows(Role::User));
        assert!(!USER.allows(Role::Worker));
        assert!(!ADMIN.allows(Role::User));
        assert!(WORKER.allows(Role::Worker) && WORKER.allows(Role::User));
        assert!(OPEN.allows(Role::Worker));
    }

    #[test]
    fn each_token_identifies_its_own_subject_and_role() {
        let auth = auth();
        let who = |secret: &str| auth.identify(Some(&header(&format!("Bearer {secret}"))));
        assert_eq!(who("admin-secret-0123456789").unwrap().subject, "ada");
        assert_eq!(who("user-secret-0123456789").unwrap().role, Role::User);
        assert_eq!(who("worker-secret-0123456789").unwrap().subject, "wes");
        assert!(
            who("user-secret-012345678").is_err(),
            "a prefix is not the token"
        );
        assert!(who("user-secret-01234567890").is_err(), "nor a longer text");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() {
        let auth = auth();
        let caller = auth
            .identify(Some(&header("bearer   user-secret-0123456789 ")))
            .unwrap();
        assert_eq!(caller.subject, "uma");
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "user-secret-0123456789",
        ] {
            let err = auth.identify(Some(&header(bad))).unwrap_err();
            assert_eq!(err.code(), "UNAUTHORIZED", "{bad}");
        }
        assert_eq!(auth.identify(None).unwrap_err().code(), "UNAUTHORIZED");
    }

    #[test]
    fn a_shared_secret_identifies_the_first_token_listed() {
        let token = |subject: &str, role| Token {
            subject: subject.into(),
            role,
            secret: Secret::new("same-secret-0123456789"),
        };
        let auth = Auth::tokens([token("first", Role::Worker), token("second", Role::Admin)]);
        let caller = auth
            .identify(Some(&header("Bearer same-secret-0123456789")))
            .unwrap();
        assert_eq!(caller.subject, "first");
    }

    #[test]
    fn with_authentication_disabled_everyone_is_an_anonymous_admin() {
        let caller = Auth::disabled().identify(None).unwrap();
        assert_eq!(caller, Caller::anonymous());
        assert_eq!(caller.role, Role::Admin);
        assert!(!Auth::disabled().is_enabled() && auth().is_enabled());
    }

    #[test]
    fn with_no_tokens_every_request_is_refused() {
        let auth = Auth::tokens([]);
        assert!(auth.is_enabled());
        assert!(auth.identify(Some(&header("Bearer anything"))).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let shown = format!("{:?} {:?}", auth(), Secret::new("admin-secret-0123456789"));
        assert!(!shown.contains("secret-0123456789"), "{shown}");
        assert!(
            shown.contains("ada") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn the_operator_actions_need_admin() {
        for route in [
            "/v1/executions/{id}/cancel",
            "/v1/executions/{id}/retry",
            "/v1/executions/{id}/restart",
            "/v1/queues/{q}/pause",
            "/v1/queues/{q}/resume",
        ] {
            assert_eq!(required_access(&Method::POST, route), ADMIN, "{route}");
        }
        let user = Caller {
            subject: "uma".into(),
            role: Role::User,
        };
        let err = authorize(&user, &Method::POST, "/v1/executions/{id}/retry").unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN");
        assert!(authorize(&Caller::anonymous(), &Method::POST, "/v1/queues/{q}/pause").is_ok());
    }

    #[test]
    fn workers_may_only_lease_heartbeat_and_post_results() {
        let worker_routes: Vec<&str> = POLICY
            .iter()
            .filter(|rule| rule.access.allows(Role::Worker) && rule.access != OPEN)
            .map(|rule| rule.route)
            .collect();
        assert_eq!(
            worker_routes,
            [
                "/v1/queues/{q}/lease",
                "/v1/jobs/{id}/heartbeat",
                "/v1/jobs/{id}/result"
            ]
        );
    }

    #[test]
    fn head_is_looked_up_as_get() {
        assert_eq!(required_access(&Method::HEAD, "/v1/pipelines"), USER);
    }

    #[test]
    fn a_route_missing_from_the_table_needs_admin() {
        assert_eq!(
            required_access(&Method::DELETE, "/v1/not-in-the-table/{id}"),
            ADMIN
        );
        assert_eq!(
            required_access(&Method::DELETE, "/v1/pipelines/{id}"),
            ADMIN
        );
    }

    #[test]
    fn the_table_has_one_rule_per_method_and_route() {
        let mut seen = HashSet::new();
        for rule in POLICY {
            assert!(rule.route.starts_with("/v1/"), "{}", rule.route);
            assert!(
                seen.insert((rule.method.clone(), rule.route)),
                "{} {} is listed twice",
                rule.method,
                rule.route
            );
        }
    }

    /// The role table of `docs/API.md` is this table: same routes, same roles.
    #[test]
    fn the_documented_role_table_matches_the_policy() {
        let doc = include_str!("../../docs/API.md");
        // The table is the one of its section; other sections have tables of their own.
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with("Authentication and roles\n"))
            .expect("docs/API.md has the section \"Authentication and roles\"");
        let mut documented = HashSet::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (method, route) = cells[1]
                .trim_matches('`')
                .split_once(' ')
                .unwrap_or_else(|| panic!("`METHOD /route` expected: {line}"));
            documented.insert((method.to_string(), route.to_string(), cells[2].to_string()));
        }
        let policy: HashSet<(String, String, String)> = POLICY
            .iter()
            .map(|rule| {
                let who = match rule.access {
                    Access::Open => "anyone (no token)".to_string(),
                    Access::AtLeast(role) => Role::ALL
                        .into_iter()
                        .rev()
                        .filter(|r| *r >= role)
                        .map(Role::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                (rule.method.to_string(), rule.route.to_string(), who)
            })
            .collect();
        let missing: Vec<_> = policy.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&policy).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/API.md differs from POLICY: missing {missing:?}, extra {extra:?}"
        );
    }
}
