//! Pipelines: versioned definitions under the global tag.

use std::collections::HashMap;

use redis::Value as RValue;
use sluice_core::{Millis, Pipeline, ids};

use crate::{Store, StoreError, contract};

/// A pipeline as stored: its current definition and version.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPipeline {
    /// The definition of `version`.
    pub pipeline: Pipeline,
    /// Version number (1 for the first).
    pub version: u32,
    /// When it was first applied.
    pub created_at: Millis,
    /// When the current version was applied.
    pub updated_at: Millis,
}

impl Store {
    /// Stores `pipeline`; a new version only if it differs from the current one. Returns
    /// `(version, changed)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn put_pipeline(&self, pipeline: &Pipeline, now: Millis) -> Result<(u32, bool), StoreError> {
        let canonical = serde_json::to_string(pipeline).unwrap_or_default();
        let digest = format!("{:016x}", ids::fnv1a(canonical.as_bytes()));
        let mut conn = self.conn.clone();
        let reply: Vec<RValue> = self
            .scripts
            .put_pipeline
            .key(self.keys.pipeline(&pipeline.id))
            .key(self.keys.pipelines())
            .arg(now)
            .arg(canonical)
            .arg(digest)
            .arg(&pipeline.id)
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [RValue::Int(v), RValue::Int(c)] => Ok((u32::try_from(*v).unwrap_or(0), *c == 1)),
            other => Err(contract("put_pipeline", other)),
        }
    }

    /// The current version of pipeline `id`.
    ///
    /// # Errors
    /// Redis errors; an unreadable record.
    pub async fn get_pipeline(&self, id: &str) -> Result<Option<StoredPipeline>, StoreError> {
        let key = self.keys.pipeline(id);
        let mut conn = self.conn.clone();
        let map: HashMap<String, String> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
        let Some(version) = map.get("version").and_then(|v| v.parse::<u32>().ok()) else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt { key: key.clone(), reason };
        let def = map
            .get(&format!("def:{version}"))
            .ok_or_else(|| corrupt(format!("version {version} has no definition")))?;
        let pipeline: Pipeline =
            serde_json::from_str(def).map_err(|e| corrupt(format!("definition is unreadable: {e}")))?;
        let ts = |f: &str| map.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(StoredPipeline { pipeline, version, created_at: ts("created_at"), updated_at: ts("updated_at") }))
    }

    /// Every stored pipeline (current versions), sorted by id.
    ///
    /// # Errors
    /// Redis errors; an unreadable record.
    pub async fn list_pipelines(&self) -> Result<Vec<StoredPipeline>, StoreError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.pipelines()).query_async(&mut conn).await?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get_pipeline(&id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }
}
