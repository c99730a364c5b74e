//! Logging: `tracing-subscriber` with a `RUST_LOG`-style filter; human-readable on a
//! terminal, JSON lines otherwise (journald, Loki). The filter can be replaced while the
//! process runs (SIGHUP re-reads `log.filter`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Replaces the log filter of the running process.
pub type FilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the filter adds unless it names the `redis` crate itself: while the nodes of a Redis
/// Cluster are unreachable, its client logs a warning or an error for every reconnect
/// attempt, dozens a second, which would drown sluice's own account of the outage (the
/// store's callers log theirs once, with backoff).
const QUIET_REDIS: &str = "redis::cluster_handling=off";

/// The filter from `RUST_LOG` when set (it wins over the config), else `filter`; either
/// with [`QUIET_REDIS`] unless it names `redis`.
fn filter_of(filter: &str) -> Result<EnvFilter, String> {
    let quiet = |text: &str| if text.contains("redis") { text.to_string() } else { format!("{text},{QUIET_REDIS}") };
    if let Ok(env) = std::env::var(EnvFilter::DEFAULT_ENV)
        && !env.trim().is_empty()
        && let Ok(f) = EnvFilter::try_new(quiet(&env))
    {
        return Ok(f);
    }
    EnvFilter::try_new(quiet(filter)).map_err(|e| format!("log.filter `{filter}`: {e}"))
}

/// Installs the global subscriber; returns the setter of its filter.
pub fn init(filter: &str, format: &str) -> FilterSetter {
    let initial = filter_of(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        "json" => true,
        "human" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let base = tracing_subscriber::fmt().with_env_filter(initial).with_writer(std::io::stderr);
    // The two formats have different subscriber types, hence different handle types.
    if json {
        let builder = base.json().flatten_event(true).with_current_span(false).with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = builder.try_init();
        Box::new(move |text| handle.reload(filter_of(text)?).map_err(|e| e.to_string()))
    } else {
        let builder = base.with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = builder.try_init();
        Box::new(move |text| handle.reload(filter_of(text)?).map_err(|e| e.to_string()))
    }
}
