//! The typed configuration, layered: defaults < file < `SLUICE_…` environment < flags.
//!
//! Every key has a default (documented on its field), so an empty file is valid. Unknown
//! keys are refused, naming the key. Environment variables name nested keys with `__`
//! (`SLUICE_REDIS__URL` is `redis.url`); variables without `__` (such as `SLUICE_API_URL`,
//! which the CLI reads) are not configuration keys and are ignored here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The default config file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sluice/sluice.toml";

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    sluice_core::duration::parse(&text).map_err(serde::de::Error::custom)
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
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
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Connection URL. Default `redis://127.0.0.1:6379`. Env `SLUICE_REDIS__URL`.
    pub url: String,
    /// Prefix of every key. Default `sluice`.
    pub prefix: String,
    /// Number of shards; fixed for the life of a deployment. Default 1.
    pub shards: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), prefix: "sluice".into(), shards: 1 }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
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

/// `[pipelines]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// Directory of pipeline files (`*.toml`, `*.json`) applied at start. Default: none.
    /// A relative path is relative to the config file's directory.
    pub dir: Option<PathBuf>,
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Queues to lease from. Default `["default"]`.
    pub queues: Vec<String>,
    /// Jobs run at once. Default 16.
    pub concurrency: usize,
    /// Time running jobs get to finish after SIGTERM. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Lease lifetime without a heartbeat. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// Longest idle wait between lease attempts. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub idle_poll: Duration,
    /// Between SIGTERM and SIGKILL when a command is stopped. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub kill_grace: Duration,
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
        }
    }
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Time between promotion/reclaim passes. Default `500ms`.
    #[serde(deserialize_with = "duration")]
    pub tick: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self { tick: sluice_scheduler::SchedulerConfig::default().tick }
    }
}

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
    let config: Config = builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
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
        if key == "worker.queues" {
            let list: Vec<String> = value.split(',').map(|q| q.trim().to_string()).filter(|q| !q.is_empty()).collect();
            builder = builder.set_override(key, list)?;
        } else {
            builder = builder.set_override(key, value)?;
        }
    }
    Ok(builder.build()?)
}

fn check(c: &Config) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if c.redis.shards == 0 || c.redis.shards > 1024 {
        problems.push("redis.shards must be between 1 and 1024".to_string());
    }
    if c.redis.prefix.is_empty() || c.redis.prefix.contains(['{', '}', ' ']) {
        problems.push("redis.prefix must be non-empty, without braces or spaces".to_string());
    }
    if let Err(e) = c.api.listen.parse::<std::net::SocketAddr>() {
        problems.push(format!("api.listen `{}` is not an address such as 127.0.0.1:7070: {e}", c.api.listen));
    }
    if !["auto", "human", "json"].contains(&c.log.format.as_str()) {
        problems.push(format!("log.format `{}` must be auto, human or json", c.log.format));
    }
    for q in &c.worker.queues {
        if q.is_empty() || q.len() > 64 || !q.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)) {
            problems.push(format!("worker.queues: `{q}` is not a queue name (letters, digits, . _ -)"));
        }
    }
    if let Err(e) = worker_config(c).check() {
        problems.push(e);
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
        ..sluice_worker::WorkerConfig::default()
    }
}

/// The store settings of `c`.
pub fn store_config(c: &Config) -> sluice_store::StoreConfig {
    sluice_store::StoreConfig {
        url: c.redis.url.clone(),
        prefix: c.redis.prefix.clone(),
        shards: c.redis.shards,
        event_cap: c.events.cap,
        ..sluice_store::StoreConfig::default()
    }
}
