//! SIGHUP: re-read the configuration file, replace the log filter, and apply the pipeline
//! files again (in the roles that apply them: `api` and `up`).
//!
//! A reload never stops the process: a configuration that no longer loads, or a pipeline
//! file with problems, is logged and the process goes on with what it had. Settings other
//! than `log.filter` and the pipeline files take effect at the next start.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use signal_hook::consts::SIGHUP;
use signal_hook_tokio::Signals;
use sluice_store::engine::Engine;

use crate::config::Config;
use crate::telemetry::FilterSetter;

/// Loads the configuration again, as at start (same file, environment and flags).
pub type ConfigLoader = Box<dyn Fn() -> anyhow::Result<(Config, PathBuf)> + Send + Sync>;

/// The engine of a role that applies pipeline files, registered once it is connected.
static PIPELINE_ENGINE: OnceLock<Engine> = OnceLock::new();

/// Registers the engine through which a reload applies the pipeline files (`api`, `up`).
pub fn apply_pipelines_with(engine: &Engine) {
    let _ = PIPELINE_ENGINE.set(engine.clone());
}

/// Listens for SIGHUP for the life of the runtime.
///
/// # Errors
/// The signal handler cannot be installed.
pub fn install(load: ConfigLoader, set_filter: FilterSetter) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    let load = Arc::new(load);
    tokio::spawn(async move {
        while signals.next().await.is_some() {
            reload(&load, &set_filter).await;
        }
    });
    Ok(())
}

async fn reload(load: &ConfigLoader, set_filter: &FilterSetter) {
    tracing::info!("SIGHUP: reloading the log filter and the pipeline files");
    let (config, base) = match load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload: the configuration does not load; keeping the current one");
            return;
        }
    };
    match set_filter(&config.log.filter) {
        Ok(()) => tracing::info!(log.filter = %config.log.filter, "reload: log filter applied"),
        Err(e) => tracing::error!(error = %e, "reload: the log filter is invalid; keeping the current one"),
    }
    if let Some(engine) = PIPELINE_ENGINE.get() {
        match crate::serve::load_pipelines(engine, &config, &base).await {
            Ok(()) => tracing::info!("reload: pipeline files applied"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "reload: cannot apply the pipeline files"),
        }
    }
}
