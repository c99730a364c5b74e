//! Conversions between domain records and their Redis form.
//!
//! A job is a hash of string fields, so scripts can read and write single fields; JSON
//! values (payload, result, error) are stored as JSON text in their field. The retry policy
//! is stored compactly (see [`retry_field`]) so that a pending job with a small payload keeps
//! every value within Redis's small-hash limit (`hash-max-listpack-value`, 64 bytes), which
//! stores the whole hash as one compact listpack: about a third of the memory of a hash
//! table. An execution is a hash with the JSON document in `doc`, plus `status` and `rev`
//! beside it.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sluice_core::job::{Job, JobError, JobStatus, Lease, NewJob};
use sluice_core::retry::{Backoff, RetryPolicy};
use sluice_core::{Execution, Millis};

use crate::StoreError;
use crate::keys::Lane;

/// The hash fields of a new job, as a JSON object of strings (what the scripts receive).
pub(crate) fn new_job_fields(job: &NewJob, now: Millis) -> Map<String, Value> {
    let mut f = Map::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), Value::String(v));
    };
    put("id", job.id.clone());
    put("queue", job.queue.clone());
    put("kind", job.kind.clone());
    put("lane", Lane::of_kind(&job.kind).as_str().to_string());
    put("payload", job.payload.to_string());
    put("status", JobStatus::Pending.as_str().to_string());
    put("priority", job.priority.to_string());
    put("attempts", "0".to_string());
    put("max_attempts", job.retry.max_attempts.to_string());
    put("retry", retry_field(&job.retry));
    put("scheduled_at", job.run_at.unwrap_or(now).max(now).to_string());
    put("created_at", now.to_string());
    put("updated_at", now.to_string());
    if let Some(t) = job.timeout_ms {
        put("timeout_ms", t.to_string());
    }
    if let Some(k) = &job.dedupe_key {
        put("dedupe_key", k.clone());
    }
    if let Some(e) = &job.execution_id {
        put("execution_id", e.clone());
    }
    if let Some(s) = job.step {
        put("step", s.to_string());
    }
    f
}

fn corrupt(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { key: key.to_string(), reason: reason.into() }
}

fn parse_num<T: std::str::FromStr>(key: &str, map: &HashMap<String, String>, field: &str) -> Result<Option<T>, StoreError> {
    match map.get(field).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| corrupt(key, format!("field `{field}` is not a number: {v}"))),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(key: &str, map: &HashMap<String, String>, field: &str) -> Result<Option<T>, StoreError> {
    match map.get(field).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => serde_json::from_str(v)
            .map(Some)
            .map_err(|e| corrupt(key, format!("field `{field}` is not valid JSON: {e}"))),
    }
}

/// Reads a job from its hash fields. `key` names the hash in errors.
pub(crate) fn job_from_hash(key: &str, map: &HashMap<String, String>) -> Result<Job, StoreError> {
    let text = |f: &str| map.get(f).cloned().filter(|v| !v.is_empty());
    let id = text("id").ok_or_else(|| corrupt(key, "field `id` is missing"))?;
    let status = text("status")
        .and_then(|s| JobStatus::parse(&s))
        .ok_or_else(|| corrupt(key, "field `status` is missing or unknown"))?;
    let lease = match (text("lease_token"), text("lease_worker")) {
        (Some(token), Some(worker)) => Some(Lease {
            token,
            worker,
            deadline: parse_num(key, map, "lease_deadline")?.unwrap_or(0),
        }),
        _ => None,
    };
    Ok(Job {
        id,
        queue: text("queue").unwrap_or_default(),
        kind: text("kind").unwrap_or_default(),
        payload: parse_json(key, map, "payload")?.unwrap_or(Value::Null),
        status,
        priority: parse_num(key, map, "priority")?.unwrap_or(0),
        attempts: parse_num(key, map, "attempts")?.unwrap_or(0),
        retry: parse_retry(key, map)?,
        timeout_ms: parse_num(key, map, "timeout_ms")?,
        scheduled_at: parse_num(key, map, "scheduled_at")?.unwrap_or(0),
        dedupe_key: text("dedupe_key"),
        lease,
        result: parse_json(key, map, "result")?,
        last_error: parse_json::<JobError>(key, map, "last_error")?,
        created_at: parse_num(key, map, "created_at")?.unwrap_or(0),
        updated_at: parse_num(key, map, "updated_at")?.unwrap_or(0),
        started_at: parse_num(key, map, "started_at")?,
        finished_at: parse_num(key, map, "finished_at")?,
        execution_id: text("execution_id"),
        step: parse_num(key, map, "step")?,
    })
}

/// The `retry` field of a job: `backoff/initial_ms/max_ms/jitter` (`exponential/1000/60000/1`);
/// `max_attempts` has a field of its own. The JSON form of the policy (84 bytes with the
/// defaults) would exceed the 64-byte limit of a compact hash by itself.
pub(crate) fn retry_field(retry: &RetryPolicy) -> String {
    let backoff = match retry.backoff {
        Backoff::Fixed => "fixed",
        Backoff::Exponential => "exponential",
    };
    format!("{backoff}/{}/{}/{}", retry.initial_ms, retry.max_ms, u8::from(retry.jitter))
}

/// Reads a job's retry policy: the compact `retry` field with `max_attempts`, or the JSON
/// form that jobs written by earlier releases carry; the default when there is none.
fn parse_retry(key: &str, map: &HashMap<String, String>) -> Result<RetryPolicy, StoreError> {
    let Some(text) = map.get("retry").filter(|v| !v.is_empty()) else {
        return Ok(RetryPolicy::default());
    };
    if text.starts_with('{') {
        return Ok(parse_json::<RetryPolicy>(key, map, "retry")?.unwrap_or_default());
    }
    let bad = || corrupt(key, format!("field `retry` is not `backoff/initial_ms/max_ms/jitter`: {text:?}"));
    let parts: Vec<&str> = text.split('/').collect();
    let [backoff, initial, max, jitter] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(RetryPolicy {
        max_attempts: parse_num(key, map, "max_attempts")?.unwrap_or(RetryPolicy::default().max_attempts),
        backoff: match *backoff {
            "fixed" => Backoff::Fixed,
            "exponential" => Backoff::Exponential,
            _ => return Err(bad()),
        },
        initial_ms: initial.parse().map_err(|_| bad())?,
        max_ms: max.parse().map_err(|_| bad())?,
        jitter: match *jitter {
            "0" => false,
            "1" => true,
            _ => return Err(bad()),
        },
    })
}

/// Turns a flat `[field, value, field, value, …]` reply into a map.
pub(crate) fn pairs_to_map(flat: Vec<String>) -> HashMap<String, String> {
    let mut map = HashMap::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    map
}

/// Reads an execution from its hash (`doc`, `rev`).
pub(crate) fn execution_from_hash(key: &str, map: &HashMap<String, String>) -> Result<Execution, StoreError> {
    let doc = map.get("doc").ok_or_else(|| corrupt(key, "field `doc` is missing"))?;
    let mut exec: Execution = serde_json::from_str(doc)
        .map_err(|e| corrupt(key, format!("execution document is unreadable: {e}")))?;
    exec.rev = parse_num(key, map, "rev")?.unwrap_or(0);
    Ok(exec)
}

/// The stored document of an execution (without its revision, kept beside it).
pub(crate) fn execution_doc(exec: &Execution) -> String {
    serde_json::to_string(exec).unwrap_or_default()
}
