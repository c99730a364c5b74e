//! How records are shown to clients (the response DTOs).
//!
//! - A **job** is its stored record, except that the lease shows only `{worker, deadline}`:
//!   the fencing token is a capability of the holder and is never served.
//! - An **execution** is its stored record with the live state of the current step's job
//!   folded in ([`sluice_core::Execution::observe`]: a leased job shows its step as
//!   `running`), and without the pipeline snapshot unless asked for
//!   (`?include=pipeline`); `pipeline_id` and `pipeline_version` always say which version
//!   it runs.

use serde_json::{Value, json};
use sluice_core::{Execution, Job};
use sluice_store::{Store, StoreError, StoredPipeline};

use crate::error::ApiError;

/// Serializes a value the API built itself; failing to is a bug.
fn to_value(value: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("cannot serialize a view: {e}")))
}

/// The client view of a job: everything but the lease token.
pub(crate) fn job(job: &Job) -> Result<Value, ApiError> {
    let mut view = to_value(job)?;
    if let Some(map) = view.as_object_mut() {
        map.remove("lease");
        if let Some(lease) = &job.lease {
            // Built from an allow-list so a field added to `Lease` later is not served by
            // accident.
            map.insert(
                "lease".into(),
                json!({ "worker": lease.worker, "deadline": lease.deadline }),
            );
        }
    }
    Ok(view)
}

/// The client view of an execution: the current step's job folded in, and the pipeline
/// snapshot only when `include_pipeline`.
pub(crate) async fn execution(
    store: &Store,
    mut exec: Execution,
    include_pipeline: bool,
) -> Result<Value, ApiError> {
    let current_job = exec.steps.get(exec.current).and_then(|s| s.job_id.clone());
    if let Some(job_id) = current_job {
        match store.get_job(&job_id).await {
            Ok(Some(job)) => exec.observe(&job),
            // Pruned, or an id this deployment cannot address: show the stored state.
            Ok(None) | Err(StoreError::BadId(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut view = to_value(&exec)?;
    if !include_pipeline && let Some(map) = view.as_object_mut() {
        map.remove("pipeline");
    }
    Ok(view)
}

/// One line of the pipeline list.
pub(crate) fn pipeline_summary(stored: &StoredPipeline) -> Value {
    let p = &stored.pipeline;
    let mut item = json!({
        "id": p.id,
        "name": p.name,
        "version": stored.version,
        "steps": p.steps.len(),
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
    });
    if let (Some(map), Some(description)) = (item.as_object_mut(), &p.description) {
        map.insert("description".into(), json!(description));
    }
    item
}

/// A pipeline with its version and timestamps.
pub(crate) fn pipeline(stored: &StoredPipeline) -> Result<Value, ApiError> {
    Ok(json!({
        "id": stored.pipeline.id,
        "version": stored.version,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "pipeline": to_value(&stored.pipeline)?,
    }))
}

#[cfg(test)]
mod tests {
    use sluice_core::job::Lease;
    use sluice_core::{JobStatus, RetryPolicy};

    use super::*;

    #[test]
    fn a_job_view_never_carries_the_lease_token() {
        let job = Job {
            id: "job_0_01JD0000000000000000000000".into(),
            queue: "default".into(),
            kind: "noop".into(),
            payload: Value::Null,
            status: JobStatus::Running,
            priority: 0,
            attempts: 1,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            scheduled_at: 0,
            dedupe_key: None,
            lease: Some(Lease {
                token: "secret".into(),
                worker: "w1".into(),
                deadline: 42,
            }),
            result: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            started_at: Some(1),
            finished_at: None,
            execution_id: None,
            step: None,
        };
        let view = super::job(&job).unwrap();
        assert_eq!(view["lease"], json!({"worker": "w1", "deadline": 42}));
        assert!(!view.to_string().contains("secret"));
        assert_eq!(view["status"], "running");
    }
}
