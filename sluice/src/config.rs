//! The typed configuration, layered: defaults < file < `SLUICE_…` environment < flags.
//!
//! Every key has a default (documented on its field), so an empty file is valid. Unknown
//! keys are refused, naming the key. Environment variables name nested keys with `__`
//! (`SLUICE_REDIS__URL` is `redis.url`); variables without `__` (such as `SLUICE_API_URL`,
//! which the CLI reads) are not configuration keys and are ignored here.
//!
//! Secrets (`auth.tokens[…].token`, or the variable named by `token_env`) are held as
//! [`Secret`]s: `Debug` of the configuration never shows them, and no message quotes them.

use std::collections::HashMap;
use std::env::VarError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use sluice_api::auth::{Auth, Role, Secret, Token};

/// The default config file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sluice/sluice.toml";

/// A secret as shown by `sluice config show`: never itself.
fn redacted<S: serde::Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

fn duration_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&sluice_core::duration::format(*d))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    sluice_core::duration::parse(&text).map_err(serde::de::Error::custom)
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Redis connection and layout.
    pub redis: RedisConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Where pipeline files are loaded from.
    pub pipelines: PipelinesConfig,
    /// Worker settings.
    pub worker: WorkerSection,
    /// Scheduler settings.
    pub scheduler: SchedulerSection,
    /// Event stream settings.
    pub events: EventsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication of the HTTP API.
    pub auth: AuthSection,
    /// The metrics endpoint of workers and schedulers.
    pub metrics: MetricsConfig,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Connection URL; on a Redis Cluster, a seed node. Default `redis://127.0.0.1:6379`.
    /// Env `SLUICE_REDIS__URL`.
    pub url: String,
    /// Whether Redis is a Redis Cluster. Default false. Env `SLUICE_REDIS__CLUSTER`.
    pub cluster: bool,
    /// More seed nodes of a cluster besides `url` (only with `cluster`). Default none. Env
    /// `SLUICE_REDIS__SEEDS` (comma-separated).
    pub seeds: Vec<String>,
    /// Prefix of every key. Default `sluice`.
    pub prefix: String,
    /// Number of shards; fixed for the life of a deployment. Default 1.
    pub shards: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), cluster: false, seeds: Vec::new(), prefix: "sluice".into(), shards: 1 }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address. Default `127.0.0.1:7070`. Env `SLUICE_API__LISTEN`.
    pub listen: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:7070".into() }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `sluice worker` and `sluice scheduler` serve Prometheus metrics (`GET /metrics`),
    /// e.g. `127.0.0.1:9464`. Default: none (not served). Env `SLUICE_METRICS__LISTEN`; flag
    /// `--metrics-listen`. The API serves `/metrics` on `api.listen` and does not use this key.
    /// Every process needs its own address: set it per process (flag or environment), not in
    /// a file that several processes of one host share.
    pub listen: Option<String>,
}

/// `[pipelines]`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// Directory of pipeline files (`*.toml`, `*.json`) applied at start. Default: none.
    /// A relative path is relative to the config file's directory.
    pub dir: Option<PathBuf>,
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Queues to lease from. Default `["default"]`.
    pub queues: Vec<String>,
    /// Jobs run at once. Default 16.
    pub concurrency: usize,
    /// Time running jobs get to finish after SIGTERM. Default `30s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub shutdown_timeout: Duration,
    /// Lease lifetime without a heartbeat. Default `30s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub lease_ttl: Duration,
    /// Longest idle wait between lease attempts. Default `5s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub idle_poll: Duration,
    /// Between SIGTERM and SIGKILL when a command is stopped. Default `10s`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub kill_grace: Duration,
    /// A PEM file of certificate authorities trusted, besides the system's, when `http`
    /// steps, HTTP gate probes and `http` jobs call `https://` URLs: for endpoints whose
    /// certificates a private authority signed. Default: none. Env `SLUICE_WORKER__CA_FILE`.
    /// A relative path is relative to the config file's directory. The worker refuses to
    /// start when the file cannot be read or holds no certificate.
    pub ca_file: Option<PathBuf>,
}

impl Default for WorkerSection {
    fn default() -> Self {
        let d = sluice_worker::WorkerConfig::default();
        Self {
            queues: d.queues,
            concurrency: d.concurrency,
            shutdown_timeout: d.shutdown_timeout,
            lease_ttl: d.lease_ttl,
            idle_poll: d.idle_poll,
            kill_grace: d.kill_grace,
            ca_file: d.ca_file,
        }
    }
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Time between passes (fire due schedules, promote due jobs, reclaim expired leases).
    /// Default `500ms`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub tick: Duration,
    /// How long a schedule's run history is kept. Default `7d`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub history_retention: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            tick: sluice_scheduler::SchedulerConfig::default().tick,
            history_retention: sluice_store::StoreConfig::default().schedule_history_retention,
        }
    }
}

/// `[events]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Approximate cap of each shard's event stream. Default 100000.
    pub cap: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { cap: 100_000 }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter. Default `info`. `RUST_LOG` wins when set.
    pub filter: String,
    /// `auto` (human on a terminal, JSON otherwise), `human` or `json`. Default `auto`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".into(), format: "auto".into() }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Turns bearer tokens off. Default `false` (every `/v1` request needs a token). Env
    /// `SLUICE_AUTH__DISABLED`. `true` is for a first try on one machine: every caller is then
    /// an anonymous admin, and the API refuses to start unless `api.listen` is a loopback
    /// address.
    pub disabled: bool,
    /// The accepted tokens, `[[auth.tokens]]`. Default: none (the API refuses to start while
    /// authentication is on and no token is configured).
    pub tokens: Vec<TokenEntry>,
}


/// One `[[auth.tokens]]` entry. `Debug` never shows the secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenEntry {
    /// Who holds the token; logged and recorded as the actor of operator actions. Required.
    pub subject: String,
    /// `admin` (everything), `user` (everything but the operator actions: cancel, retry,
    /// restart an execution, pause or resume a queue) or `worker` (lease, heartbeat, post a
    /// result). Required.
    pub role: String,
    /// The secret itself (at least 16 printable ASCII characters, no spaces). Exactly one of
    /// `token` and `token_env` is required.
    #[serde(serialize_with = "redacted")]
    pub token: Option<Secret>,
    /// The name of an environment variable holding the secret, to keep it out of files.
    pub token_env: Option<String>,
}

/// The shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// Looks an environment variable up (the process environment outside tests).
type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

fn process_env(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// The tokens of `auth` with their secrets (read from the environment for `token_env`), or
/// every problem, each naming its field. Secrets are never quoted.
pub fn resolve_tokens(auth: &AuthSection, env: EnvLookup<'_>) -> Result<Vec<Token>, Vec<String>> {
    let mut problems = Vec::new();
    let mut tokens = Vec::new();
    let mut first_with: HashMap<String, usize> = HashMap::new();
    for (i, entry) in auth.tokens.iter().enumerate() {
        let field = format!("auth.tokens[{i}]");
        if entry.subject.trim().is_empty() {
            problems.push(format!("{field}.subject is required: who holds the token"));
        }
        let role = match entry.role.parse::<Role>() {
            Ok(role) => Some(role),
            Err(_) if entry.role.is_empty() => {
                problems.push(format!("{field}.role is required; expected admin, user or worker"));
                None
            }
            Err(e) => {
                problems.push(format!("{field}.role: {e}"));
                None
            }
        };
        let secret = match (&entry.token, &entry.token_env) {
            (Some(_), Some(_)) => Err(format!("{field}: give either token or token_env, not both")),
            (None, None) => Err(format!("{field}: token or token_env is required (the secret, or the environment variable holding it)")),
            (Some(secret), None) => check_secret(&format!("{field}.token: the secret"), secret.expose()).map(|()| secret.clone()),
            (None, Some(name)) => secret_from_env(&format!("{field}.token_env"), name, env),
        };
        let secret = match secret {
            Ok(secret) => match first_with.get(secret.expose()) {
                Some(first) => {
                    problems.push(format!("{field}: the same secret as auth.tokens[{first}]; every token needs its own secret"));
                    None
                }
                None => {
                    first_with.insert(secret.expose().to_string(), i);
                    Some(secret)
                }
            },
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        if let (Some(role), Some(secret)) = (role, secret) {
            tokens.push(Token { subject: entry.subject.trim().to_string(), role, secret });
        }
    }
    if problems.is_empty() { Ok(tokens) } else { Err(problems) }
}

/// The secret held by the variable `name`.
fn secret_from_env(field: &str, name: &str, env: EnvLookup<'_>) -> Result<Secret, String> {
    if name.is_empty() {
        return Err(format!("{field} is empty; name the environment variable holding the secret"));
    }
    match env(name) {
        Ok(value) => check_secret(&format!("{field}: environment variable `{name}`"), &value).map(|()| Secret::new(value)),
        Err(VarError::NotPresent) => Err(format!("{field}: environment variable `{name}` is not set")),
        Err(VarError::NotUnicode(_)) => Err(format!("{field}: environment variable `{name}` is not valid UTF-8")),
    }
}

/// Whether `secret` can be a bearer token; `what` starts the message (it names the field).
fn check_secret(what: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if !secret.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(format!("{what} must be printable ASCII without spaces (for example `openssl rand -hex 32`)"));
    }
    let len = secret.len();
    if len < MIN_SECRET_LEN {
        return Err(format!("{what} has {len} characters; use at least {MIN_SECRET_LEN} (for example `openssl rand -hex 32`)"));
    }
    Ok(())
}

/// Whether `listen` (`host:port`) is a loopback address: 127.0.0.0/8, `[::1]` or `localhost`.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => is_localhost(listen),
    }
}

/// Whether `listen` is `localhost:<port>`.
fn is_localhost(listen: &str) -> bool {
    listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| host.eq_ignore_ascii_case("localhost") && port.parse::<u16>().is_ok())
}

/// The authentication of the API from `c`, with the checks that only concern a process that
/// serves it: disabled only on a loopback `api.listen`; enabled only with tokens.
///
/// # Errors
/// Each names the keys to change.
pub fn api_auth(c: &Config) -> anyhow::Result<Auth> {
    api_auth_with(c, &process_env)
}

fn api_auth_with(c: &Config, env: EnvLookup<'_>) -> anyhow::Result<Auth> {
    if c.auth.disabled {
        if !is_loopback(&c.api.listen) {
            anyhow::bail!(
                "auth.disabled = true is only allowed when api.listen is a loopback address (127.0.0.1, [::1] or localhost), \
                 and api.listen is `{}`: configure [[auth.tokens]] and remove auth.disabled = true, or listen on loopback",
                c.api.listen
            );
        }
        return Ok(Auth::disabled());
    }
    if c.auth.tokens.is_empty() {
        anyhow::bail!(
            "authentication is on (auth.disabled is not set) but no token is configured: add [[auth.tokens]] entries \
             (subject, role, and token or token_env), \
             or set auth.disabled = true (env SLUICE_AUTH__DISABLED=true) to run open on a loopback address"
        );
    }
    let tokens = resolve_tokens(&c.auth, env)
        .map_err(|problems| anyhow::anyhow!("invalid configuration:\n  {}", problems.join("\n  ")))?;
    Ok(Auth::tokens(tokens))
}

/// Overrides given as flags (highest layer).
#[derive(Debug, Default, Clone)]
pub struct Overrides(pub Vec<(&'static str, String)>);

/// Loads the configuration from `path` (or the default file when it exists), the
/// environment and `overrides`. Returns it with the directory relative paths resolve from.
///
/// # Errors
/// Every problem, with the key or file it concerns.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<(Config, PathBuf)> {
    let mut builder = config::Config::builder();
    let base = match path {
        Some(p) => {
            if !p.exists() {
                anyhow::bail!("config file {} does not exist", p.display());
            }
            builder = builder.add_source(config::File::from(p).format(config::FileFormat::Toml));
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            if default.exists() {
                builder = builder.add_source(config::File::from(default).format(config::FileFormat::Toml));
                default.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                std::env::current_dir().unwrap_or_default()
            }
        }
    };
    builder = builder.add_source(env_source()?);
    for (key, value) in &overrides.0 {
        builder = builder.set_override(*key, value.clone())?;
    }
    let mut config: Config = builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if let Some(file) = &mut config.worker.ca_file
        && file.is_relative()
    {
        *file = base.join(&*file);
    }
    check(&config)?;
    Ok((config, base))
}

/// The `SLUICE_<SECTION>__<KEY>` variables as a config source.
fn env_source() -> anyhow::Result<config::Config> {
    let mut builder = config::Config::builder();
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("SLUICE_") else { continue };
        if !rest.contains("__") {
            continue;
        }
        let key = rest.to_lowercase().replace("__", ".");
        if key == "worker.queues" || key == "redis.seeds" {
            let list: Vec<String> = value.split(',').map(|q| q.trim().to_string()).filter(|q| !q.is_empty()).collect();
            builder = builder.set_override(key, list)?;
        } else {
            builder = builder.set_override(key, value)?;
        }
    }
    Ok(builder.build()?)
}

fn check(c: &Config) -> anyhow::Result<()> {
    check_with(c, &process_env)
}

fn check_with(c: &Config, env: EnvLookup<'_>) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if c.redis.shards == 0 || c.redis.shards > 1024 {
        problems.push("redis.shards must be between 1 and 1024".to_string());
    }
    if c.redis.prefix.is_empty() || c.redis.prefix.contains(['{', '}', ' ']) {
        problems.push("redis.prefix must be non-empty, without braces or spaces".to_string());
    }
    problems.extend(store_config(c).check());
    if let Err(e) = c.api.listen.parse::<SocketAddr>()
        && !is_localhost(&c.api.listen)
    {
        problems.push(format!("api.listen `{}` is not an address such as 127.0.0.1:7070 or localhost:7070: {e}", c.api.listen));
    }
    if let Some(listen) = &c.metrics.listen
        && let Err(e) = listen.parse::<SocketAddr>()
        && !is_localhost(listen)
    {
        problems.push(format!("metrics.listen `{listen}` is not an address such as 127.0.0.1:9464 or localhost:9464: {e}"));
    }
    if !["auto", "human", "json"].contains(&c.log.format.as_str()) {
        problems.push(format!("log.format `{}` must be auto, human or json", c.log.format));
    }
    for q in &c.worker.queues {
        if !sluice_core::pipeline::is_queue_name(q) {
            problems.push(format!("worker.queues: `{q}` is not a valid queue name; {}", sluice_core::pipeline::QUEUE_NAME_RULE));
        }
    }
    if let Err(e) = worker_config(c).check() {
        problems.push(e);
    }
    if let Err(token_problems) = resolve_tokens(&c.auth, env) {
        problems.extend(token_problems);
    }
    if problems.is_empty() { Ok(()) } else { anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  ")) }
}

/// The worker settings of `c`.
pub fn worker_config(c: &Config) -> sluice_worker::WorkerConfig {
    sluice_worker::WorkerConfig {
        queues: c.worker.queues.clone(),
        concurrency: c.worker.concurrency,
        lease_ttl: c.worker.lease_ttl,
        shutdown_timeout: c.worker.shutdown_timeout,
        idle_poll: c.worker.idle_poll,
        kill_grace: c.worker.kill_grace,
        ca_file: c.worker.ca_file.clone(),
        ..sluice_worker::WorkerConfig::default()
    }
}

/// The scheduler settings of `c`. Reclaiming waits `worker.lease_ttl` after an outage, so
/// that live workers renew the leases that expired meanwhile first.
pub fn scheduler_config(c: &Config) -> sluice_scheduler::SchedulerConfig {
    sluice_scheduler::SchedulerConfig {
        tick: c.scheduler.tick,
        reclaim_grace: c.worker.lease_ttl,
        ..sluice_scheduler::SchedulerConfig::default()
    }
}

/// The store settings of `c`.
pub fn store_config(c: &Config) -> sluice_store::StoreConfig {
    sluice_store::StoreConfig {
        url: c.redis.url.clone(),
        cluster: c.redis.cluster,
        seeds: c.redis.seeds.clone(),
        prefix: c.redis.prefix.clone(),
        shards: c.redis.shards,
        event_cap: c.events.cap,
        schedule_history_retention: c.scheduler.history_retention,
        ..sluice_store::StoreConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config from TOML text alone (no file, no environment).
    fn parse(text: &str) -> Result<Config, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
    }

    /// An environment with `OPS_TOKEN` set, `BLANK` empty and nothing else.
    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "OPS_TOKEN" => Ok("ops-secret-from-the-environment".into()),
            "BLANK" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        let config = parse(text).unwrap();
        resolve_tokens(&config.auth, &env).err().unwrap_or_default()
    }

    #[test]
    fn auth_is_enabled_by_default_and_refuses_to_start_without_tokens() {
        let config = parse("").unwrap();
        assert!(!config.auth.disabled);
        let err = api_auth_with(&config, &env).unwrap_err().to_string();
        assert!(err.contains("[[auth.tokens]]") && err.contains("auth.disabled"), "{err}");
    }

    #[test]
    fn inline_and_environment_secrets_resolve_to_tokens() {
        let config = parse(
            r#"
            [[auth.tokens]]
            subject = "ops"
            role = "admin"
            token_env = "OPS_TOKEN"

            [[auth.tokens]]
            subject = "ci"
            role = "user"
            token = "ci-secret-0123456789"

            [[auth.tokens]]
            subject = "runner"
            role = "worker"
            token = "runner-secret-0123456789"
            "#,
        )
        .unwrap();
        check_with(&config, &env).unwrap();
        let tokens = resolve_tokens(&config.auth, &env).unwrap();
        let summary: Vec<(&str, Role, &str)> =
            tokens.iter().map(|t| (t.subject.as_str(), t.role, t.secret.expose())).collect();
        assert_eq!(
            summary,
            [
                ("ops", Role::Admin, "ops-secret-from-the-environment"),
                ("ci", Role::User, "ci-secret-0123456789"),
                ("runner", Role::Worker, "runner-secret-0123456789"),
            ]
        );
        assert!(api_auth_with(&config, &env).unwrap().is_enabled());
    }

    #[test]
    fn every_token_problem_is_reported_at_once_naming_its_field() {
        // One `[[auth.tokens]]` entry per line, beside the problems it must give.
        let cases: [(&str, &[&str]); 10] = [
            (
                r#"{ subject = "a", role = "root", token = "a-secret-0123456789" }"#,
                &[r#"auth.tokens[0].role: unknown role "root"; expected admin, user or worker"#],
            ),
            (
                r#"{ subject = "b", role = "user", token = "b-secret-0123456789", token_env = "OPS_TOKEN" }"#,
                &["auth.tokens[1]: give either token or token_env, not both"],
            ),
            (
                r#"{ subject = "c", role = "user" }"#,
                &["auth.tokens[2]: token or token_env is required (the secret, or the environment variable holding it)"],
            ),
            (r#"{ subject = "d", role = "user", token = "" }"#, &["auth.tokens[3].token: the secret is empty"]),
            (
                r#"{ subject = "e", role = "user", token_env = "NOT_SET_ANYWHERE" }"#,
                &["auth.tokens[4].token_env: environment variable `NOT_SET_ANYWHERE` is not set"],
            ),
            (
                r#"{ subject = "f", role = "admin", token = "a-secret-0123456789" }"#,
                &["auth.tokens[5]: the same secret as auth.tokens[0]; every token needs its own secret"],
            ),
            (r#"{ role = "user", token = "g-secret-0123456789" }"#, &["auth.tokens[6].subject is required: who holds the token"]),
            (
                r#"{ subject = "h", role = "user", token = "short" }"#,
                &["auth.tokens[7].token: the secret has 5 characters; use at least 16 (for example `openssl rand -hex 32`)"],
            ),
            (
                r#"{ subject = "i", token_env = "BLANK" }"#,
                &[
                    "auth.tokens[8].role is required; expected admin, user or worker",
                    "auth.tokens[8].token_env: environment variable `BLANK` is empty",
                ],
            ),
            (
                r#"{ subject = "j", role = "user", token = "has a space 0123456789" }"#,
                &["auth.tokens[9].token: the secret must be printable ASCII without spaces (for example `openssl rand -hex 32`)"],
            ),
        ];
        let entries: Vec<&str> = cases.iter().map(|(entry, _)| *entry).collect();
        let found = problems(&format!("[auth]\ntokens = [\n{}\n]\n", entries.join(",\n")));
        let expected: Vec<&str> = cases.iter().flat_map(|(_, problems)| problems.iter().copied()).collect();
        assert_eq!(found, expected);
        assert!(!found.concat().contains("secret-0123456789"), "no secret is quoted");
    }

    #[test]
    fn load_time_checks_include_the_token_problems() {
        let config = parse("[[auth.tokens]]\nsubject = \"x\"\nrole = \"boss\"\ntoken = \"x-secret-0123456789\"\n").unwrap();
        let err = check_with(&config, &env).unwrap_err().to_string();
        assert!(err.contains("auth.tokens[0].role: unknown role \"boss\""), "{err}");
    }

    #[test]
    fn cluster_settings_reach_the_store_and_bad_ones_are_named() {
        let config = parse(
            "[redis]\nurl = \"redis://10.0.0.1:6379\"\ncluster = true\nseeds = [\"redis://10.0.0.2:6379\"]\nshards = 8\n[auth]\ndisabled = true\n",
        )
        .unwrap();
        check_with(&config, &env).unwrap();
        let store = store_config(&config);
        assert!(store.cluster);
        assert_eq!(store.nodes(), ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);

        let config = parse("[redis]\nurl = \"nonsense\"\nseeds = [\"redis://10.0.0.2:6379\", \"bad\"]\n[auth]\ndisabled = true\n").unwrap();
        let err = check_with(&config, &env).unwrap_err().to_string();
        assert!(err.contains("redis.url `nonsense`"), "{err}");
        assert!(err.contains("redis.seeds is only for a Redis Cluster"), "{err}");
        assert!(err.contains("redis.seeds: `bad`"), "{err}");
    }

    #[test]
    fn unknown_keys_in_auth_are_refused() {
        let err = parse("[[auth.tokens]]\nsubject = \"x\"\nrole = \"user\"\nsecret = \"x-secret-0123456789\"\n").unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
        let err = parse("[auth]\nenabled = false\n").unwrap_err();
        assert!(err.to_string().contains("enabled"), "{err}");
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        for listen in ["127.0.0.1:7070", "127.8.9.10:80", "[::1]:7070", "localhost:7070", "LOCALHOST:1"] {
            assert!(is_loopback(listen), "{listen}");
        }
        for listen in ["0.0.0.0:7070", "[::]:7070", "10.0.0.5:7070", "example.com:7070", "localhost", "localhost:x"] {
            assert!(!is_loopback(listen), "{listen}");
        }
    }

    #[test]
    fn disabled_auth_starts_only_on_a_loopback_address() {
        for listen in ["127.0.0.1:7070", "[::1]:7070", "localhost:7070"] {
            let config = parse(&format!("[api]\nlisten = \"{listen}\"\n[auth]\ndisabled = true\n")).unwrap();
            check_with(&config, &env).unwrap();
            let auth = api_auth_with(&config, &env).unwrap_or_else(|e| panic!("{listen}: {e}"));
            assert!(!auth.is_enabled(), "{listen}");
        }
        let config = parse("[api]\nlisten = \"0.0.0.0:7070\"\n[auth]\ndisabled = true\n").unwrap();
        let err = api_auth_with(&config, &env).unwrap_err().to_string();
        assert!(err.contains("auth.disabled") && err.contains("api.listen") && err.contains("0.0.0.0:7070"), "{err}");
    }

    #[test]
    fn enabled_auth_listens_anywhere_with_tokens() {
        let config = parse(
            "[api]\nlisten = \"0.0.0.0:7070\"\n[[auth.tokens]]\nsubject = \"ops\"\nrole = \"admin\"\ntoken_env = \"OPS_TOKEN\"\n",
        )
        .unwrap();
        assert!(api_auth_with(&config, &env).unwrap().is_enabled());
    }

    #[test]
    fn the_metrics_address_is_off_by_default_read_from_the_file_overridden_by_the_flag_and_checked() {
        assert_eq!(parse("").unwrap().metrics.listen, None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "[auth]\ndisabled = true\n\n[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        let (config, _) = load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(config.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        // `--metrics-listen` reaches the loader as this override.
        let flag = Overrides(vec![("metrics.listen", "localhost:9465".into())]);
        let (config, _) = load(Some(&file), &flag).unwrap();
        assert_eq!(config.metrics.listen.as_deref(), Some("localhost:9465"));
        let bad = Overrides(vec![("metrics.listen", "9464".into())]);
        let err = load(Some(&file), &bad).unwrap_err().to_string();
        assert!(err.contains("metrics.listen `9464` is not an address"), "{err}");
        let err = parse("[metrics]\nport = 9464\n").unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn auth_can_be_turned_off_with_a_string_as_the_environment_gives_it() {
        // `SLUICE_AUTH__DISABLED=true` reaches the builder as this override.
        let config: Config = config::Config::builder()
            .set_override("auth.disabled", "true")
            .unwrap()
            .build()
            .and_then(config::Config::try_deserialize)
            .unwrap();
        assert!(config.auth.disabled);
    }

    #[test]
    fn debug_output_of_the_config_never_shows_a_secret() {
        let config = parse("[[auth.tokens]]\nsubject = \"ops\"\nrole = \"admin\"\ntoken = \"ops-inline-secret-0123456789\"\n").unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("ops-inline-secret"), "{shown}");
        assert!(shown.contains("ops") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_relative_ca_file_is_relative_to_the_config_file_and_reaches_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        let body = "[auth]\ndisabled = true\n\n[worker]\nca_file = ";
        std::fs::write(&file, format!("{body}\"certs/ca.pem\"\n")).unwrap();
        let (config, _) = load(Some(&file), &Overrides::default()).unwrap();
        let want = dir.path().join("certs/ca.pem");
        assert_eq!(config.worker.ca_file.as_deref(), Some(want.as_path()));
        assert_eq!(worker_config(&config).ca_file, Some(want));

        std::fs::write(&file, format!("{body}\"/etc/sluice/ca.pem\"\n")).unwrap();
        let (config, _) = load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(worker_config(&config).ca_file, Some(PathBuf::from("/etc/sluice/ca.pem")));
        assert_eq!(worker_config(&parse("").unwrap()).ca_file, None);
    }

    #[test]
    fn the_example_config_runs_open_on_loopback() {
        let config = parse(include_str!("../../config/sluice.toml")).unwrap();
        check_with(&config, &env).unwrap();
        assert!(config.auth.disabled);
        assert!(!api_auth_with(&config, &env).unwrap().is_enabled());
    }

    /// Every key of a configuration, dotted (`worker.lease_ttl`; `auth.tokens[].role` for
    /// the fields of a list of tables).
    fn keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.push(path.clone());
                keys(&path, v, out);
            }
        } else if let Some(first) = value.as_array().and_then(|a| a.first()) {
            keys(&format!("{prefix}[]"), first, out);
        }
    }

    #[test]
    fn the_configuration_reference_lists_every_key() {
        let mut config = Config::default();
        config.auth.tokens.push(TokenEntry::default());
        let mut all = Vec::new();
        keys("", &serde_json::to_value(&config).unwrap(), &mut all);
        let reference = include_str!("../../docs/CONFIGURATION.md");
        let sections = ["redis", "api", "pipelines", "worker", "metrics", "scheduler", "events", "log", "auth"];
        let missing: Vec<&String> = all
            .iter()
            .filter(|k| !sections.contains(&k.as_str()))
            .filter(|k| !reference.contains(&format!("| `{k}` |")))
            .collect();
        assert!(missing.is_empty(), "docs/CONFIGURATION.md has no row for {missing:?}");
        assert!(all.len() > 20, "{all:?}");
    }

}
