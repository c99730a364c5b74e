//! Reading pipeline files from disk.

use std::path::{Path, PathBuf};

use sluice_core::pipeline::{self, Pipeline, Problem};

/// A pipeline file, parsed: the pipeline, or every problem found in it.
pub type Parsed = Result<Pipeline, Vec<Problem>>;

/// Parses one pipeline file (`.toml` or `.json`, by extension).
pub fn read_pipeline(path: &Path) -> anyhow::Result<Parsed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("json") => pipeline::parse_json(&text),
        _ => pipeline::parse_toml(&text),
    })
}

/// Parses every `*.toml` / `*.json` file of `dir`, sorted by name.
pub fn read_pipeline_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Parsed)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read pipelines.dir {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("toml" | "json")))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| read_pipeline(&p).map(|r| (p, r))).collect()
}
